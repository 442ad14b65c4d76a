//! What a node does with each request, once the shell has read it and knows who sent it.

use std::time::Instant;

use super::Shared;
use crate::hlc::system_wall_ms;
use crate::limits::{check_key, check_value};
use crate::net::PeerIdentity;
use crate::protocol::{ErrorCode, ErrorReply, NodeStatus, Request, Response, VersionInfo};
use crate::record::{Entry, Payload, Record, Version};
use crate::storage::StoreError;

impl Shared {
    pub(crate) async fn handle(&self, peer: &PeerIdentity, request: Request) -> Response {
        if !request.allowed(peer.role) {
            return error(
                ErrorCode::Forbidden,
                format!(
                    "forbidden: {} requires a {} certificate, but {:?} presented a {} certificate",
                    request.name(),
                    request.required_role(),
                    peer.name,
                    peer.role
                ),
            );
        }
        let result = match request {
            Request::Hello { .. } => Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "hello is only valid as the first request on a connection",
            )),
            Request::Get { key, .. } => self.get(&key),
            Request::Put { key, value, .. } => self.write(key, Payload::Value(value)).await,
            Request::Delete { key, .. } => self.write(key, Payload::Tombstone).await,
            Request::Status => self.status(),
            Request::Replicate { entries } => self.replicate(entries).await,
        };
        result.unwrap_or_else(Response::Error)
    }

    fn get(&self, key: &[u8]) -> Result<Response, ErrorReply> {
        check_key(key).map_err(limit_error)?;
        let record = self.store.get(key).map_err(storage_error)?;
        let found = record.and_then(|record| match record.payload {
            Payload::Value(value) => Some((value, self.describe(record.version))),
            Payload::Tombstone => None,
        });
        Ok(Response::Value { found })
    }

    async fn write(&self, key: Vec<u8>, payload: Payload) -> Result<Response, ErrorReply> {
        check_key(&key).map_err(limit_error)?;
        if let Payload::Value(value) = &payload {
            check_value(value, self.config.value_bytes_max).map_err(limit_error)?;
        }
        let version = Version {
            hlc: self
                .clock
                .lock()
                .expect("clock lock")
                .tick(system_wall_ms()),
            node: self.store.node_id(),
        };
        let entry = Entry {
            key,
            record: Record { version, payload },
        };
        self.store.apply(vec![entry]).await.map_err(storage_error)?;
        Ok(Response::Written {
            version: self.describe(version),
        })
    }

    async fn replicate(&self, entries: Vec<Entry>) -> Result<Response, ErrorReply> {
        for entry in &entries {
            check_key(&entry.key).map_err(limit_error)?;
            if let Payload::Value(value) = &entry.record.payload {
                check_value(value, self.config.value_bytes_max).map_err(limit_error)?;
            }
        }
        {
            let mut clock = self.clock.lock().expect("clock lock");
            let now = system_wall_ms();
            for entry in &entries {
                clock
                    .observe(entry.record.version.hlc, now)
                    .map_err(|e| ErrorReply::new(ErrorCode::ClockOffset, e.to_string()))?;
            }
        }
        let outcomes = self.store.apply(entries).await.map_err(storage_error)?;
        let applied = outcomes.iter().filter(|o| o.applied()).count() as u32;
        Ok(Response::Replicated { applied })
    }

    fn status(&self) -> Result<Response, ErrorReply> {
        let info = self.store.cluster().expect("cluster set at start");
        Ok(Response::Status(NodeStatus {
            name: self.config.name.clone(),
            node_id: self.store.node_id(),
            address: self.local_addr.to_string(),
            hlc: self.clock.lock().expect("clock lock").last(),
            cluster_id: info.id_hex(),
            partitions: info.partitions,
            records: self.store.len().map_err(storage_error)?,
            uptime_ms: Instant::now().duration_since(self.started).as_millis() as u64,
        }))
    }

    /// A version with its coordinator's name, when this node knows it.
    fn describe(&self, version: Version) -> VersionInfo {
        let origin = (version.node == self.store.node_id()).then(|| self.config.name.clone());
        VersionInfo { version, origin }
    }
}

fn error(code: ErrorCode, message: String) -> Response {
    Response::Error(ErrorReply::new(code, message))
}

fn limit_error(err: crate::limits::LimitError) -> ErrorReply {
    ErrorReply::new(ErrorCode::LimitExceeded, err.to_string())
}

fn storage_error(err: StoreError) -> ErrorReply {
    match err {
        StoreError::Closed => ErrorReply::new(ErrorCode::ShuttingDown, err.to_string()),
        other => {
            tracing::error!("storage: {other}");
            ErrorReply::new(ErrorCode::Storage, format!("not applied: {other}"))
        }
    }
}

//! One run's exchanges with one peer: roots compared in batches, then the differing
//! partitions' exchanges driven step by step, what they receive applied.

use super::*;

/// One exchange step over the wire, with its byte counts.
async fn step(
    shared: &Shared,
    connection: &quinn::Connection,
    request: SyncRequest,
    counts: &Mutex<SyncCounts>,
) -> Result<SyncResponse, String> {
    let pushed = match &request {
        SyncRequest::Push { entries, .. } => entry_bytes(entries),
        _ => 0,
    };
    shared
        .anti_entropy
        .limiter
        .take(pushed, shared.config.repair_bytes_per_sec)
        .await;
    let request = Request::Sync(request);
    let sent = postcard::experimental::serialized_size(&request).unwrap_or(0) as u64 + 4;
    let response = tokio::time::timeout(STEP_TIMEOUT, send_request(connection, &request))
        .await
        .map_err(|_| format!("no answer within {} s", STEP_TIMEOUT.as_secs()))?
        .map_err(|PeerError(e)| e)?;
    let received = postcard::experimental::serialized_size(&response).unwrap_or(0) as u64 + 4;
    let response = match response {
        Response::Sync(response) => response,
        Response::Error(reply) => return Err(reply.message),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let entries_in = match &response {
        SyncResponse::Compared { send, .. } => entry_bytes(send),
        SyncResponse::Entries { entries, .. } => entry_bytes(entries),
        _ => 0,
    };
    // What this node pulls counts against its own limit too, not only what it sends:
    // the next step waits until the bytes received fit.
    shared
        .anti_entropy
        .limiter
        .take(entries_in, shared.config.repair_bytes_per_sec)
        .await;
    let mut c = counts.lock().expect("counts lock");
    c.round_trips += 1;
    c.entry_bytes_sent += pushed;
    c.metadata_bytes_sent += sent - pushed;
    c.entry_bytes_received += entries_in;
    c.metadata_bytes_received += received - entries_in;
    Ok(response)
}

type PeerOutcome = (SyncCounts, Vec<PartitionDifference>, Vec<PartitionId>);

/// Compares `partitions` with `peer` and, unless `dry_run`, repairs them. Returns the
/// counts, the partitions that differed, and the partitions in sync at the end.
pub(super) async fn sync_with(
    shared: &Arc<Shared>,
    peer: &str,
    partitions: &[PartitionId],
    dry_run: bool,
    tick: &(dyn Fn(u64, u64) + Sync),
) -> Result<PeerOutcome, String> {
    let id = shared
        .view()
        .member(peer)
        .map(|m| m.id.clone())
        .ok_or_else(|| format!("{peer} is not a known member"))?;
    let connection = shared
        .peers
        .connection(&id)
        .await
        .map_err(|PeerError(e)| e)?;
    let counts = Mutex::new(SyncCounts::default());
    let salt = {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        u64::from_le_bytes(bytes)
    };
    let differing = compare_roots(shared, &connection, peer, partitions, salt, &counts).await?;
    check_roots_answer(partitions, &differing)?;
    counts.lock().expect("counts lock").partitions_compared += partitions.len() as u64;
    counts.lock().expect("counts lock").partitions_differing += differing.len() as u64;
    tick(partitions.len().saturating_sub(differing.len()) as u64, 0);
    let mut differences: BTreeMap<PartitionId, PartitionDifference> = BTreeMap::new();
    run_exchanges(
        shared,
        &connection,
        peer,
        &differing,
        salt,
        dry_run,
        &counts,
        &mut differences,
        tick,
    )
    .await;
    let mut still: Vec<PartitionId> = Vec::new();
    if !dry_run && !differing.is_empty() {
        // Verify, and give partitions written to during the exchange one more pass.
        let touched: Vec<PartitionId> = differing.iter().map(|d| d.partition).collect();
        let salt = salt.wrapping_add(1);
        let again = compare_roots(shared, &connection, peer, &touched, salt, &counts).await?;
        check_roots_answer(&touched, &again)?;
        let mut ignored = BTreeMap::new();
        run_exchanges(
            shared,
            &connection,
            peer,
            &again,
            salt,
            false,
            &counts,
            &mut ignored,
            &|_, _| {},
        )
        .await;
        let retried: Vec<PartitionId> = again.iter().map(|d| d.partition).collect();
        let salt = salt.wrapping_add(1);
        let last = compare_roots(shared, &connection, peer, &retried, salt, &counts).await?;
        check_roots_answer(&retried, &last)?;
        still = last
            .into_iter()
            .map(|d| d.partition)
            .filter(|p| {
                // Differences that are only pending purges are not divergence.
                differences.get(p).is_none_or(|d| d.keys > 0)
            })
            .collect();
        for p in &still {
            if let Some(d) = differences.get_mut(p) {
                d.still_differing = true;
            }
        }
    }
    let in_sync = partitions
        .iter()
        .copied()
        .filter(|p| !still.contains(p) && (!dry_run || !differences.contains_key(p)))
        .collect();
    let counts = counts.into_inner().expect("counts lock");
    Ok((counts, differences.into_values().collect(), in_sync))
}

async fn compare_roots(
    shared: &Shared,
    connection: &quinn::Connection,
    peer: &str,
    partitions: &[PartitionId],
    salt: u64,
    counts: &Mutex<SyncCounts>,
) -> Result<Vec<DifferingRoot>, String> {
    let mut differing = Vec::new();
    for chunk in partitions.chunks(ROOTS_PER_MESSAGE) {
        // Taken before the summaries: everything this node held then is in them, so
        // roots found equal mean both held the same from this time on.
        let taken = AntiEntropy::compare_time(shared, chunk).await;
        let roots = chunk
            .iter()
            .map(|&p| root_summary(&shared.store, p, salt))
            .collect::<Result<Vec<_>, _>>()?;
        match step(
            shared,
            connection,
            SyncRequest::Roots { salt, roots },
            counts,
        )
        .await?
        {
            SyncResponse::Roots { differing: d } => {
                let agreed: Vec<PartitionId> = chunk
                    .iter()
                    .copied()
                    .filter(|p| !d.iter().any(|x| x.partition == *p))
                    .collect();
                shared.anti_entropy.agreed(shared, peer, &agreed, taken);
                differing.extend(d);
            }
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
    Ok(differing)
}

#[allow(clippy::too_many_arguments)]
async fn run_exchanges(
    shared: &Arc<Shared>,
    connection: &quinn::Connection,
    peer: &str,
    differing: &[DifferingRoot],
    salt: u64,
    dry_run: bool,
    counts: &Mutex<SyncCounts>,
    differences: &mut BTreeMap<PartitionId, PartitionDifference>,
    tick: &(dyn Fn(u64, u64) + Sync),
) {
    let horizon = grace_horizon(shared);
    let limit = shared.config.exchanges_in_flight.max(1);
    let mut pending = differing.iter();
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < limit {
            let Some(root) = pending.next() else { break };
            running.push(exchange_one(
                shared, connection, root, salt, horizon, dry_run, counts,
            ));
        }
        let Some((partition, result)) = running.next().await else {
            break;
        };
        match result {
            Ok(stats) => {
                let mut c = counts.lock().expect("counts lock");
                c.keys_differing += stats.differing_keys;
                c.keys_sent += stats.keys_sent;
                c.keys_received += stats.keys_received;
                c.pending_purge += stats.pending_purge();
                drop(c);
                differences.insert(
                    partition,
                    PartitionDifference {
                        partition,
                        peer: peer.to_string(),
                        keys: stats.differing_keys,
                        still_differing: false,
                    },
                );
                tick(1, stats.keys_sent + stats.keys_received);
            }
            Err(err) => {
                tracing::warn!(peer, partition, "exchange failed: {err}");
                differences.insert(
                    partition,
                    PartitionDifference {
                        partition,
                        peer: peer.to_string(),
                        keys: 0,
                        still_differing: true,
                    },
                );
                tick(1, 0);
            }
        }
    }
}

async fn exchange_one(
    shared: &Arc<Shared>,
    connection: &quinn::Connection,
    root: &DifferingRoot,
    salt: u64,
    horizon: u64,
    dry_run: bool,
    counts: &Mutex<SyncCounts>,
) -> (
    PartitionId,
    Result<crate::antientropy::exchange::ExchangeStats, String>,
) {
    let partition = root.partition;
    shared
        .anti_entropy
        .books
        .lock()
        .expect("books lock")
        .in_flight
        .insert(partition);
    let result = async {
        let limits = sync_limits(shared);
        let mut exchange = Exchange::new(&shared.store, root, salt, horizon, dry_run, limits)?;
        while let Some(request) = exchange.poll_request(&shared.store) {
            let response = step(shared, connection, request, counts).await?;
            exchange.handle_response(&shared.store, response);
            while let Some(entries) = exchange.poll_apply() {
                apply_received(shared, entries).await?;
            }
        }
        match exchange.failure() {
            Some(err) => Err(err.to_string()),
            None => Ok(exchange.stats()),
        }
    }
    .await;
    shared
        .anti_entropy
        .books
        .lock()
        .expect("books lock")
        .in_flight
        .remove(&partition);
    (partition, result)
}

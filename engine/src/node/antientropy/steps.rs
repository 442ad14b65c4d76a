//! One run with one peer, as the runtime carries it out: the run's state machine
//! ([`Run`]) decides every step; this moves its messages over the wire (within the
//! repair rate limit, counting their bytes) and applies what it receives.

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

/// What a request or an apply of the run came back with.
enum Answer {
    Response(Result<SyncResponse, String>),
    Applied(Result<(), String>),
}

/// Compares `partitions` with `peer` and, unless `dry_run`, repairs them: drives the
/// run's state machine ([`Run`]), carrying its requests to the peer and applying what
/// it receives. Returns the counts, the partitions that differed, and the partitions
/// in sync at the end.
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
    let config = RunConfig {
        salt,
        dry_run,
        horizon_ms: grace_horizon(shared),
        limits: sync_limits(shared),
        exchanges_max: shared.config.exchanges_in_flight.max(1),
        roots_per_request: ROOTS_PER_MESSAGE,
    };
    let mut run: Run<Moment> = Run::new(peer, partitions.to_vec(), config);
    let mut waiting = FuturesUnordered::new();
    loop {
        while let Some(next) = run.poll() {
            match next {
                RunStep::Compare(chunk) => {
                    // Taken before the summaries: everything this node held then is in
                    // them, so roots found equal mean both held the same from then on.
                    let at = AntiEntropy::compare_time(shared, &chunk).await;
                    run.compare(&shared.store, at);
                }
                RunStep::Send { tag, request } => {
                    let (connection, counts) = (&connection, &counts);
                    waiting.push(futures_util::future::Either::Left(async move {
                        let response = step(shared, connection, request, counts).await;
                        (tag, Answer::Response(response))
                    }));
                }
                RunStep::Apply { tag, entries } => {
                    waiting.push(futures_util::future::Either::Right(async move {
                        let result = apply_received(shared, entries)
                            .await
                            .map(|_| ())
                            .map_err(String::from);
                        (tag, Answer::Applied(result))
                    }));
                }
                RunStep::Agreed { partitions, at } => {
                    shared.anti_entropy.agreed(shared, peer, &partitions, at);
                }
                RunStep::Began(partition) => {
                    shared.anti_entropy.books_in_flight(partition, true);
                }
                RunStep::Ended { partition, error } => {
                    shared.anti_entropy.books_in_flight(partition, false);
                    if let Some(err) = error {
                        tracing::warn!(peer, partition, "exchange failed: {err}");
                    }
                }
                RunStep::Progress { partitions, keys } => tick(partitions, keys),
                RunStep::Done => {
                    let outcome = run.outcome().cloned().expect("a run that is done says how");
                    let outcome = outcome?;
                    let mut counts = counts.lock().expect("counts lock").clone();
                    counts.add(&outcome.counts);
                    return Ok((counts, outcome.differences, outcome.in_sync));
                }
            }
        }
        match waiting.next().await {
            Some((tag, Answer::Response(response))) => {
                run.handle_response(&shared.store, tag, response)
            }
            Some((tag, Answer::Applied(result))) => run.applied(&shared.store, tag, result),
            None => return Err("the run stalled with nothing in flight".into()),
        }
    }
}

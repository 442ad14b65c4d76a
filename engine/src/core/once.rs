//! Requests a peer may deliver twice (a network that duplicates, a sender's retry)
//! whose effect must happen once: a typed update made by its actor, an operation a
//! key's home proposes for another node. Each carries an id drawn by its sender; the
//! node remembers the last [`REMEMBERED`] ids, each running (with the requests waiting
//! for it) or done (with its answer), and answers a duplicate from there.

use std::collections::{HashMap, VecDeque};

use super::ReplyTo;
use crate::protocol::Response;

/// Ids remembered. A duplicate arrives within a retry's time, so far fewer than this
/// many requests later.
const REMEMBERED: usize = 4_096;

/// The requests of one kind made for peers, by id.
#[derive(Default)]
pub(crate) struct MadeOnce {
    by_id: HashMap<u64, Made>,
    order: VecDeque<u64>,
}

enum Made {
    Running(Vec<ReplyTo>),
    Done(Box<Response>),
}

/// What a node makes of a request with an id.
pub(super) enum Seen {
    /// The first: make it.
    New,
    /// Being made: its answer goes to this request too, once made.
    Running,
    /// Made: this was its answer.
    Done(Box<Response>),
}

impl MadeOnce {
    /// Notes a request `id` from `reply`: new, or one already seen (its answer is
    /// sent, or will be, to `reply` too).
    pub(super) fn first(&mut self, id: u64, reply: ReplyTo) -> Seen {
        match self.by_id.get_mut(&id) {
            Some(Made::Running(waiting)) => {
                waiting.push(reply);
                Seen::Running
            }
            Some(Made::Done(response)) => Seen::Done(response.clone()),
            None => {
                self.by_id.insert(id, Made::Running(vec![reply]));
                self.order.push_back(id);
                while self.order.len() > REMEMBERED {
                    if let Some(old) = self.order.pop_front() {
                        self.by_id.remove(&old);
                    }
                }
                Seen::New
            }
        }
    }

    /// Request `id` is made: its answer, and who waits for it.
    pub(super) fn done(&mut self, id: u64, response: &Response) -> Vec<ReplyTo> {
        match self
            .by_id
            .insert(id, Made::Done(Box::new(response.clone())))
        {
            Some(Made::Running(waiting)) => waiting,
            _ => Vec::new(),
        }
    }
}

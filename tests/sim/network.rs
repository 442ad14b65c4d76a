//! The simulated network: what nodes send each other (membership datagrams, the
//! protocol's requests and responses, exactly as the cores emit them), their sending
//! (loss, latency, duplication, cuts) and their delivery to the cores.

use rand::RngExt;
use vergent::core::ReqId;
use vergent::membership::MemberId;
use vergent::protocol::{Request, Response};

use super::{Event, Sim};

#[derive(Debug, Clone)]
pub(super) enum Msg {
    Swim(Vec<u8>),
    /// A request from a node's core, with the sender's life (an answer reaches only
    /// the life that asked).
    Request {
        id: ReqId,
        life: u32,
        request: Request,
    },
    Response {
        id: ReqId,
        life: u32,
        /// Boxed: a response (a status, say) is large beside every other message.
        response: Box<Response>,
        /// The answering clock's true skew, when it answers a probe (bookkeeping for
        /// the clock invariant, not read by the core).
        truth_skew_ms: Option<i64>,
    },
}

impl Msg {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Msg::Swim(_) => "swim",
            Msg::Request { request, .. } => request.name(),
            Msg::Response { .. } => "response",
        }
    }
}

impl Sim {
    pub(super) fn set_jitter(&mut self, jitter_ms: u64) {
        self.jitter_recent = (self.jitter_ms.max(jitter_ms), self.now);
        self.jitter_ms = jitter_ms;
    }

    pub(super) fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if from == to {
            self.schedule(
                self.now,
                Event::Deliver {
                    from,
                    to,
                    msg: Box::new(msg),
                },
            );
            return;
        }
        if !self.healed && (self.cut.contains(&(from, to)) || self.rng.random_bool(self.loss)) {
            self.report.dropped += 1;
            return;
        }
        let latency = 1 + self.rng.random_range(0..=self.jitter_ms);
        if !self.healed && self.rng.random_bool(self.duplicate) {
            self.report.duplicated += 1;
            let again = 1 + self.rng.random_range(0..=self.jitter_ms * 4);
            self.schedule(
                self.now + again,
                Event::Deliver {
                    from,
                    to,
                    msg: Box::new(msg.clone()),
                },
            );
        }
        self.schedule(
            self.now + latency,
            Event::Deliver {
                from,
                to,
                msg: Box::new(msg),
            },
        );
    }

    /// A membership datagram from node `i` to `to`: to the second process under a
    /// member's name when it is addressed there.
    pub(super) fn datagram(&mut self, i: usize, to: MemberId, data: Vec<u8>) {
        if let Some(g) = &self.ghost
            && to.addr == g.addr
        {
            let ghost = g.id;
            let at = self.now + 1 + self.rng.random_range(0..=self.jitter_ms);
            self.schedule(
                at,
                Event::ToGhost {
                    from: i,
                    data,
                    ghost,
                },
            );
            return;
        }
        if let Some(j) = self.index_of(&to.name) {
            self.send(i, j, Msg::Swim(data));
        }
    }

    pub(super) fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        if !self.nodes[to].up {
            self.report.dropped += 1;
            return;
        }
        self.report.delivered += 1;
        let sender = self.names[from].clone();
        match msg {
            Msg::Swim(data) => {
                self.with_core(to, |core, now, store| {
                    core.handle_datagram(&sender, &data, now, store)
                });
            }
            Msg::Request { id, life, request } => {
                let node = &mut self.nodes[to];
                let reply = node.next_reply;
                node.next_reply += 1;
                node.replies.insert(reply, (from, life, id));
                self.with_core(to, |core, now, store| {
                    core.handle_request(&sender, reply, request, now, store)
                });
            }
            Msg::Response {
                id,
                life,
                response,
                truth_skew_ms,
            } => {
                if self.nodes[to].life != life {
                    self.report.dropped += 1;
                    return;
                }
                if let Some(skew) = truth_skew_ms {
                    self.nodes[to].seen_skew.insert(from, skew);
                }
                self.with_core(to, |core, now, store| {
                    core.handle_response(id, Ok(*response), now, store)
                });
            }
        }
    }
}

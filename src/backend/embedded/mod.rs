//! The embedded backend as the broker runs it: boards loaded on first use, operations applied
//! in memory in the order they arrive ([`memory`], the working set), and every answer held back
//! until the store ([`sqlite`]) has committed what it depends on. Its [`presence`] lives in the
//! process too, used by the presence actor.
//!
//! Requests for a board that is not loaded wait, in order, for its load. Each applied operation
//! becomes a write job for the store's thread, and each answer (an ack, a replayed answer, a
//! snapshot or replay) is queued behind the jobs sent before it: it goes out when
//! [`Flushed`] says they committed. Nothing a client sees was not stored first.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::oneshot;

pub(crate) mod memory;
pub(crate) mod presence;
pub(crate) mod sqlite;

use self::memory::{Committed, MemoryStore, NewEvent};
use self::sqlite::{Done, Flushed, Job, Writer};
use crate::backend::{new_epoch, Append, AppendCustom, Appended, Catchup, GetCatchup};
use crate::backend::{BackendError, Failure};
use crate::event::{AckTo, BoardEvent, BoardKey};

/// Jobs in flight plus requests waiting for a load, at most; past it, requests are refused
/// with `unavailable` until the store catches up, so that memory stays bounded when the disk
/// is slow.
pub(crate) const MAX_IN_FLIGHT: usize = 100_000;
/// A board without a room is let go after this long unused.
pub(crate) const IDLE_BOARD: Duration = Duration::from_secs(60);

/// Where an answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, BackendError>>;

/// A request that needs its board loaded.
pub(crate) enum Request {
    /// A durable operation.
    Append(Append, Reply<Appended>),
    /// An event of the backend's own type.
    Custom(AppendCustom, Reply<u64>),
    /// A snapshot or replay.
    Catchup(GetCatchup, Reply<Catchup>),
}

impl Request {
    fn board(&self) -> &BoardKey {
        match self {
            Request::Append(m, _) => &m.board,
            Request::Custom(m, _) => &m.board,
            Request::Catchup(m, _) => &m.board,
        }
    }

    fn refuse(self, error: BackendError) {
        match self {
            Request::Append(_, reply) => drop(reply.send(Err(error))),
            Request::Custom(_, reply) => drop(reply.send(Err(error))),
            Request::Catchup(_, reply) => drop(reply.send(Err(error))),
        }
    }
}

/// An answer waiting for its jobs to commit.
enum Answer {
    Appended(Reply<Appended>, Appended),
    Seq(Reply<u64>, u64),
    Catchup(Reply<Catchup>, Catchup),
}

impl Answer {
    fn send(self, failure: Option<&BackendError>) {
        match (self, failure) {
            (Answer::Appended(reply, a), None) => drop(reply.send(Ok(a))),
            (Answer::Seq(reply, seq), None) => drop(reply.send(Ok(seq))),
            (Answer::Catchup(reply, c), None) => drop(reply.send(Ok(c))),
            (Answer::Appended(reply, _), Some(e)) => drop(reply.send(Err(e.clone()))),
            (Answer::Seq(reply, _), Some(e)) => drop(reply.send(Err(e.clone()))),
            (Answer::Catchup(reply, _), Some(e)) => drop(reply.send(Err(e.clone()))),
        }
    }
}

/// A job sent to the store, and what to do once it is done.
enum Pending {
    /// The board's state is coming.
    Load(BoardKey),
    /// A new event: delivered to the board's room, then answered.
    Event(BoardKey, BoardEvent, Answer),
    /// Only an answer (a barrier).
    Answer(Answer),
}

/// The embedded backend's state in the broker.
pub(crate) struct Embedded {
    /// The boards in use.
    boards: MemoryStore,
    /// The store's thread.
    writer: Writer,
    /// Bumped when a write fails: jobs made before are failed by the writer unrun.
    generation: u64,
    /// Requests waiting for their board's load, in arrival order.
    loading: HashMap<BoardKey, Vec<Request>>,
    /// How many requests `loading` holds.
    waiting: usize,
    /// Jobs sent, in order, with their generation and what to do when each is done.
    in_flight: VecDeque<(u64, Pending)>,
}

fn storage_error(what: &'static str) -> BackendError {
    BackendError::unavailable_now(what)
}

impl Embedded {
    /// The backend over `boards`, storing through `writer`.
    pub(crate) fn new(boards: MemoryStore, writer: Writer) -> Embedded {
        Embedded {
            boards,
            writer,
            generation: 1,
            loading: HashMap::new(),
            waiting: 0,
            in_flight: VecDeque::new(),
        }
    }

    fn send(&mut self, job: Job, pending: Pending) -> Result<(), BackendError> {
        if !self.writer.send(self.generation, job) {
            return Err(storage_error("the storage thread stopped"));
        }
        self.in_flight.push_back((self.generation, pending));
        Ok(())
    }

    /// Takes a request: served now when its board is loaded, else after the load.
    pub(crate) fn request(&mut self, request: Request) {
        if self.in_flight.len() + self.waiting >= MAX_IN_FLIGHT {
            return request.refuse(storage_error("storage is behind; retry"));
        }
        let board = request.board().clone();
        if self.boards.has(&board) {
            return self.serve(request);
        }
        if let Some(waiting) = self.loading.get_mut(&board) {
            waiting.push(request);
            self.waiting += 1;
            return;
        }
        match self.send(
            Job::Load(board.clone(), new_epoch()),
            Pending::Load(board.clone()),
        ) {
            Ok(()) => {
                self.loading.insert(board, vec![request]);
                self.waiting += 1;
            }
            Err(e) => request.refuse(e),
        }
    }

    /// Serves a request whose board is loaded.
    fn serve(&mut self, request: Request) {
        let result = match request {
            Request::Append(msg, reply) => {
                let committed =
                    self.boards
                        .append(&msg.board, msg.op, &msg.user_id, msg.key.as_ref());
                match committed {
                    Err(e) => return drop(reply.send(Err(e))),
                    Ok(Committed::Replayed(seq, version)) => {
                        let appended = Appended {
                            seq,
                            version,
                            replayed: true,
                        };
                        self.send(
                            Job::Barrier,
                            Pending::Answer(Answer::Appended(reply, appended)),
                        )
                    }
                    Ok(Committed::New(seq, applied, frame, epoch, change)) => {
                        let ack = msg.ack.map(|(session, id)| AckTo {
                            session,
                            id,
                            version: applied.version,
                        });
                        let event = BoardEvent::Durable {
                            seq,
                            frame,
                            ack,
                            epoch,
                        };
                        let appended = Appended {
                            seq,
                            version: applied.version,
                            replayed: false,
                        };
                        let answer = Answer::Appended(reply, appended);
                        self.send(
                            Job::Write(*change),
                            Pending::Event(msg.board, event, answer),
                        )
                    }
                }
            }
            Request::Custom(msg, reply) => {
                let appended = self.boards.append_custom(
                    &msg.board,
                    &msg.kind,
                    &msg.payload,
                    msg.key.as_ref(),
                );
                match appended {
                    Err(e) => return drop(reply.send(Err(e))),
                    Ok((seq, None)) => {
                        self.send(Job::Barrier, Pending::Answer(Answer::Seq(reply, seq)))
                    }
                    Ok((
                        seq,
                        Some(NewEvent {
                            frame,
                            epoch,
                            change,
                        }),
                    )) => {
                        let event = BoardEvent::Durable {
                            seq,
                            frame,
                            ack: None,
                            epoch,
                        };
                        let answer = Answer::Seq(reply, seq);
                        self.send(
                            Job::Write(*change),
                            Pending::Event(msg.board, event, answer),
                        )
                    }
                }
            }
            Request::Catchup(msg, reply) => {
                match self
                    .boards
                    .catchup(&msg.board, msg.last_seq, msg.epoch.as_deref())
                {
                    Err(e) => return drop(reply.send(Err(e))),
                    Ok(catchup) => self.send(
                        Job::Barrier,
                        Pending::Answer(Answer::Catchup(reply, catchup)),
                    ),
                }
            }
        };
        if let Err(e) = result {
            // The writer is gone: nothing more can be stored. What was applied above is in
            // memory only, so let it go with the rest.
            log::error!("storage: {e}");
            self.boards.clear();
        }
    }

    /// A commit group is done: deliver and answer what waited for it, in order.
    pub(crate) fn flushed(
        &mut self,
        Flushed(outcomes): Flushed,
        deliver: impl Fn(&BoardKey, BoardEvent),
    ) {
        for outcome in outcomes {
            let Some((generation, pending)) = self.in_flight.pop_front() else {
                log::error!("storage answered a job that was not sent");
                return;
            };
            let failure = match outcome {
                Done::Ok(loaded) => match pending {
                    Pending::Load(board) => {
                        self.loaded(board, loaded.map(|b| *b));
                        continue;
                    }
                    Pending::Event(board, event, answer) => {
                        crate::metrics::DURABLE_EVENTS.inc();
                        deliver(&board, event);
                        answer.send(None);
                        continue;
                    }
                    Pending::Answer(answer) => {
                        answer.send(None);
                        continue;
                    }
                },
                Done::Failed(message) => {
                    BackendError::unavailable("the storage failed; retry", Failure(message))
                }
            };
            self.failed(generation);
            match pending {
                Pending::Load(board) => {
                    for request in self.take_waiting(&board) {
                        request.refuse(failure.clone());
                    }
                }
                Pending::Event(_, _, answer) | Pending::Answer(answer) => {
                    answer.send(Some(&failure))
                }
            }
        }
    }

    /// A board's state arrived: serve what waited for it, in order.
    fn loaded(&mut self, board: BoardKey, loaded: Option<sqlite::LoadedBoard>) {
        let waiting = self.take_waiting(&board);
        let inserted = match loaded {
            Some(loaded) => self.boards.insert(board.clone(), loaded),
            None => Err("the store gave no board".into()),
        };
        if let Err(e) = inserted {
            let error = BackendError::BadData(format!("board {board} cannot be read: {e}"));
            for request in waiting {
                request.refuse(error.clone());
            }
            return;
        }
        for request in waiting {
            self.serve(request);
        }
    }

    /// The requests that waited for `board`'s load, now no longer counted as waiting.
    fn take_waiting(&mut self, board: &BoardKey) -> Vec<Request> {
        let waiting = self.loading.remove(board).unwrap_or_default();
        self.waiting = self.waiting.saturating_sub(waiting.len());
        waiting
    }

    /// A write failed: what is in memory may be ahead of what is stored. Every board is let
    /// go (they load again from what was stored), and jobs already sent fail unrun.
    fn failed(&mut self, generation: u64) {
        // Only the first failure of a generation counts: the others are its consequences.
        if generation == self.generation {
            self.generation += 1;
            self.boards.clear();
        }
    }

    /// Lets go of a board whose room stopped.
    pub(crate) fn evict(&mut self, board: &BoardKey) {
        self.boards.evict(board);
    }

    /// Lets go of boards that no room holds and that were unused for [`IDLE_BOARD`].
    pub(crate) fn evict_idle(&mut self, has_room: impl Fn(&BoardKey) -> bool) {
        self.boards.evict_idle(IDLE_BOARD, has_room);
    }
}

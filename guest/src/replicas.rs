//! The encoder a rebuild recreates a replica stream with: the host's
//! (`wit/replicas.wit`), which runs the same replica natively on another
//! core and compresses the pieces pushed ahead while the rebuild reads the
//! next ones out of their frames; or, when the host has no such replica,
//! the guest's own copy of it.
//!
//! Either way the pieces go in as the rebuild cuts them and the bytes come
//! out in the same order, so what is served does not depend on which one
//! ran (both are `blockreg-core`'s [`ReplicaRecreator`]).
//!
//! A stream whose recipe has checkpoints is pushed stretch by stretch (a
//! piece ends at each checkpoint): the host compresses the stretches
//! waiting at once, on every core; the guest's own copy runs them in
//! order.

use std::collections::VecDeque;
use std::io;

use crate::bindings::blockreg::registry::replicas;
use crate::replica::{Checkpoint, RemoteEncoder, Replica, ReplicaRecreator};

/// Pieces (or the finish) pushed and not yet taken back: enough for the
/// host to always have the next one when it is done with one, within its
/// limit of four.
const AHEAD: usize = 3;

/// Content bytes a piece holds: Go's replicas get the 256 KiB writes they
/// were proven with (how Go's writes are cut can matter, `goflate126`);
/// pgzip's output does not depend on it, and 1 MiB pieces (its block size)
/// keep three blocks waiting, which the host compresses at once.
const GO_PIECE: u64 = 256 << 10;
/// The longest stretch pushed whole (the host's limit for one push).
const MAX_STRETCH: u64 = 16 << 20;
const PGZIP_PIECE: u64 = 1 << 20;

/// One replica stream being recreated.
pub struct ReplicaStream {
    replica: Replica,
    /// Where the host's stretches end (content offsets in the stream).
    stretch_ends: Vec<u64>,
    encoder: Encoder,
    /// Pushes and the finish not yet taken back by [`ReplicaStream::next`].
    waiting: usize,
    finished: bool,
}

enum Encoder {
    /// The host's native replica.
    Host(replicas::Encoder),
    /// The guest's own, with the output of each push not yet taken.
    Own(ReplicaRecreator, VecDeque<Vec<u8>>),
}

/// A proof's replica run by the host (`open-proof`), natively, while the
/// conversion decodes and chunks the stream: `blockreg-core`'s analysis
/// compares its output with the stream as it would its own encoder's.
pub struct HostProof {
    encoder: replicas::Encoder,
    /// Pieces pushed and not yet taken back.
    waiting: usize,
}

impl HostProof {
    /// The host's proof encoder of `replica`, or none (the analysis then
    /// runs its own); a `RemoteOpener`.
    pub fn open(replica: Replica) -> Option<Box<dyn RemoteEncoder + Send>> {
        let encoder = replicas::Encoder::open_proof(replica.name(), replica.level()).ok()?;
        Some(Box::new(HostProof {
            encoder,
            waiting: 0,
        }))
    }
}

impl RemoteEncoder for HostProof {
    fn write(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if self.waiting >= AHEAD {
            out.extend(self.encoder.next().map_err(|e| host_error(e).to_string())?);
            self.waiting -= 1;
        }
        self.encoder
            .push(plain)
            .map_err(|e| host_error(e).to_string())?;
        self.waiting += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>, out: &mut Vec<u8>) -> Result<Vec<Checkpoint>, String> {
        let failed = |e| host_error(e).to_string();
        self.encoder.finish().map_err(failed)?;
        self.waiting += 1;
        while self.waiting > 0 {
            out.extend(self.encoder.next().map_err(failed)?);
            self.waiting -= 1;
        }
        let cps = self.encoder.checkpoints().map_err(failed)?;
        Ok(cps.iter().map(from_wit).collect())
    }
}

fn from_wit(c: &replicas::Checkpoint) -> Checkpoint {
    blockreg_core::checkpoint_as!(c, Checkpoint)
}

fn to_wit(c: &Checkpoint) -> replicas::Checkpoint {
    blockreg_core::checkpoint_as!(c, replicas::Checkpoint)
}

fn host_error(e: replicas::Error) -> io::Error {
    let m = match e {
        replicas::Error::Unknown(m) | replicas::Error::Invalid(m) | replicas::Error::Other(m) => m,
    };
    io::Error::other(format!("the host's replica: {m}"))
}

impl ReplicaStream {
    /// A stream of `replica` with the recipe's `checkpoints`, on the host
    /// when it has the replica (and room for one more encoder), else in
    /// the guest.
    pub fn new(replica: Replica, checkpoints: &[Checkpoint]) -> Self {
        // A stretch is one push, and the host takes at most 16 MiB at a
        // time: checkpoints further apart (no proof records them) are not
        // used.
        let mut start = 0;
        let fits = checkpoints.iter().all(|c| {
            let fits = c.plain.saturating_sub(start) <= MAX_STRETCH;
            start = c.plain;
            fits
        });
        let checkpoints = if fits { checkpoints } else { &[] };
        let wit: Vec<_> = checkpoints.iter().map(to_wit).collect();
        match replicas::Encoder::open(replica.name(), replica.level(), &wit) {
            Ok(e) => {
                let mut s = Self::with(replica, Encoder::Host(e));
                s.stretch_ends = checkpoints.iter().map(|c| c.plain).collect();
                s
            }
            Err(_) => Self::own(replica),
        }
    }

    /// A stream of `replica` run in the guest.
    pub fn own(replica: Replica) -> Self {
        Self::with(
            replica,
            Encoder::Own(ReplicaRecreator::new(replica), VecDeque::new()),
        )
    }

    fn with(replica: Replica, encoder: Encoder) -> Self {
        Self {
            replica,
            stretch_ends: Vec::new(),
            encoder,
            waiting: 0,
            finished: false,
        }
    }

    /// How many content bytes the push of the stream's content from `at`
    /// on should carry, at most (the stream's end may come first): up to
    /// the next checkpoint on the host, else (after the last one too) a
    /// fixed piece.
    pub fn piece(&self, at: u64) -> u64 {
        if let Some(&end) = self.stretch_ends.iter().find(|&&end| end > at) {
            return end - at;
        }
        match self.replica {
            Replica::Pgzip(..) => PGZIP_PIECE,
            Replica::GoFlate126(_) | Replica::GoFlate127(_) => GO_PIECE,
        }
    }

    /// Whether the host runs it.
    #[cfg(test)]
    pub fn hosted(&self) -> bool {
        matches!(self.encoder, Encoder::Host(_))
    }

    /// Whether another piece (or the finish) should be pushed before the
    /// next output is taken.
    pub fn wants(&self) -> bool {
        !self.finished && self.waiting < AHEAD
    }

    /// Whether every output was taken, the last one included.
    pub fn done(&self) -> bool {
        self.finished && self.waiting == 0
    }

    /// Pushes the next piece of content.
    ///
    /// # Errors
    /// The host refused it (a bug of this module: too many waiting).
    pub fn push(&mut self, plain: Vec<u8>) -> io::Result<()> {
        match &mut self.encoder {
            Encoder::Host(e) => e.push(&plain).map_err(host_error)?,
            Encoder::Own(r, out) => {
                let mut bytes = Vec::with_capacity(plain.len() / 2);
                r.feed(&plain, &mut bytes);
                out.push_back(bytes);
            }
        }
        self.waiting += 1;
        Ok(())
    }

    /// Ends the stream; its last bytes are the last output.
    ///
    /// # Errors
    /// As [`ReplicaStream::push`].
    pub fn finish(&mut self) -> io::Result<()> {
        match &mut self.encoder {
            Encoder::Host(e) => e.finish().map_err(host_error)?,
            Encoder::Own(r, out) => {
                let mut bytes = Vec::new();
                r.finish(&mut bytes);
                out.push_back(bytes);
            }
        }
        self.waiting += 1;
        self.finished = true;
        Ok(())
    }

    /// The compressed bytes of the oldest push (or the finish) not yet
    /// taken, possibly empty; none when nothing waits.
    ///
    /// # Errors
    /// The host's replica failed (a host bug).
    pub fn next(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.waiting == 0 {
            return Ok(None);
        }
        let bytes = match &mut self.encoder {
            Encoder::Host(e) => e.next().map_err(host_error)?,
            Encoder::Own(_, out) => out.pop_front().unwrap_or_default(),
        };
        self.waiting -= 1;
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{seeded_bytes, texty_bytes};
    use blockreg_core::goflate::Klauspost;

    /// Everything `s` gives for `plain` pushed in the pieces it asks for,
    /// as a rebuild drives it.
    fn recreate(mut s: ReplicaStream, plain: &[u8]) -> Vec<u8> {
        let mut at = 0;
        let mut out = Vec::new();
        while !s.done() {
            while s.wants() {
                if at < plain.len() {
                    let end = plain
                        .len()
                        .min(at.saturating_add(s.piece(at as u64) as usize));
                    s.push(plain[at..end].to_vec()).unwrap();
                    at = end;
                } else {
                    s.finish().unwrap();
                }
            }
            out.extend(s.next().unwrap().expect("something waits"));
        }
        out
    }

    #[test]
    fn the_hosts_replica_gives_the_bytes_the_guests_own_gives() {
        let mut plain = texty_bytes(31, 1_500_000);
        plain.extend(seeded_bytes(32, 300_000));
        plain.extend_from_within(..400_000);
        plain.extend(texty_bytes(33, 1_500_000));
        for replica in [
            Replica::GoFlate126(6),
            Replica::GoFlate126(1),
            Replica::GoFlate127(6),
            Replica::Pgzip(Klauspost::V1_15, 5),
            Replica::Pgzip(Klauspost::V1_18_2, 1),
        ] {
            let hosted = ReplicaStream::new(replica, &[]);
            assert!(hosted.hosted(), "{replica:?}: the host has it");
            let own = recreate(ReplicaStream::own(replica), &plain);
            let host = recreate(hosted, &plain);
            assert!(own == host, "{replica:?}: the host's bytes differ");
            assert!(host.len() < plain.len(), "{replica:?}: compressed");
        }
    }

    #[test]
    fn the_hosts_stretches_from_checkpoints_give_the_stream() {
        use blockreg_core::gozip::Deflate;
        let mut plain = texty_bytes(41, 6 << 20);
        plain.extend(seeded_bytes(42, 1 << 20));
        plain.extend_from_within(..2 << 20);
        // The checkpoints a proof records (its writes are the inflater's).
        let mut e = blockreg_core::goflate126::Encoder::new(6).unwrap();
        e.checkpoint_every(
            crate::replica::CHECKPOINT_OUT,
            crate::replica::CHECKPOINT_PLAIN,
        );
        let mut expected = Vec::new();
        for p in plain.chunks(200_000) {
            e.write(p, &mut expected);
        }
        let cps = e.checkpoints().to_vec();
        e.finish(&mut expected);
        assert!(cps.len() >= 2, "{} checkpoints", cps.len());
        let hosted = ReplicaStream::new(Replica::GoFlate126(6), &cps);
        assert!(hosted.hosted());
        assert_eq!(hosted.piece(0), cps[0].plain, "a push per stretch");
        assert!(
            recreate(hosted, &plain) == expected,
            "the host's stretches differ"
        );
        // The guest's own copy ignores them and gives the same bytes.
        let own = recreate(ReplicaStream::own(Replica::GoFlate126(6)), &plain);
        assert!(own == expected, "the guest's own bytes differ");
    }

    #[test]
    fn checkpoints_too_far_apart_for_one_push_are_not_used() {
        let far = Checkpoint {
            plain: MAX_STRETCH + 1,
            out: 1,
            window_end: 0,
            index: 0,
            block_start: 0,
            byte_available: false,
            length: 3,
            offset: 0,
            hash_offset: 1,
            bits: 0,
            nbits: 0,
        };
        let s = ReplicaStream::new(Replica::GoFlate126(6), &[far]);
        assert!(s.hosted());
        assert_eq!(s.piece(0), GO_PIECE, "serial 256 KiB pieces");
    }

    #[test]
    fn a_replica_the_host_does_not_have_is_refused_as_unknown() {
        assert!(matches!(
            replicas::Encoder::open("go1.99-flate", 6, &[]),
            Err(replicas::Error::Unknown(_))
        ));
        assert!(matches!(
            replicas::Encoder::open("go1.26-flate", 42, &[]),
            Err(replicas::Error::Unknown(_))
        ));
    }
}

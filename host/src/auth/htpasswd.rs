//! HTTP Basic authentication against an htpasswd file, as registry:2 does
//! it: `user:hash` lines, bcrypt hashes only (`htpasswd -B`, `$2y$`,
//! `$2b$`, `$2a$`); entries of any other kind are warned about when the
//! file is read and never match.
//!
//! The file is checked for changes (size, modification time, inode) at each
//! login and read again when it changed, so adding a user needs no restart;
//! a file that cannot be read keeps the previous users and is logged.
//!
//! bcrypt is slow by design (a few ms at cost 5, about 250 ms at cost 12)
//! and a `docker pull` sends the same credentials with every request, so a
//! successful check is remembered for [`CACHE_TTL`], keyed by a SHA-256 of
//! user and password (the password itself is not kept). Failures are never
//! remembered, and a reload of the file forgets everything. bcrypt runs on
//! a blocking thread, never on the async executor.

use crate::guest::{stamp, FileStamp};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// How long a successful check is remembered.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(60);

/// What an unknown user's password is checked against (cost 5, what
/// `htpasswd -B` writes) when the file has no user: a hash of random bytes
/// nobody knows.
const DECOY: &str = "$2y$05$xmHN4hU9RQ8TfgR/ZgpQbeTKw.M5DOpJTS92DU8vMmX5DuPyFxek6";

/// Most checks remembered at once; the cache is emptied when full (a flood
/// of distinct valid logins is not a case worth an LRU).
const CACHE_MAX: usize = 1024;

/// The users of an htpasswd file, reloaded when it changes.
#[derive(Clone)]
pub(crate) struct Htpasswd {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    stamp: Option<FileStamp>,
    /// User → bcrypt hash.
    users: HashMap<String, String>,
    /// SHA-256 of (user, password) → when it was verified.
    verified: HashMap<[u8; 32], Instant>,
}

/// The users of htpasswd `text`, and a warning per line that is not a
/// bcrypt entry.
fn parse(text: &str, path: &Path) -> (HashMap<String, String>, Vec<String>) {
    let mut users = HashMap::new();
    let mut warnings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            warnings.push(format!(
                "{} line {}: not user:hash; ignored",
                path.display(),
                number + 1
            ));
            continue;
        };
        if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
            warnings.push(format!(
                "{} line {}: user {user:?} has no bcrypt hash (create it with htpasswd -B); \
                 this user cannot log in",
                path.display(),
                number + 1
            ));
            continue;
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    (users, warnings)
}

impl Htpasswd {
    /// Reads the file at `path`.
    ///
    /// # Errors
    ///
    /// When it cannot be read (at start this stops the server: a registry
    /// with an unreadable password file would let nobody in, or worse).
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let stamp = stamp(path);
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the htpasswd file {}: {e}", path.display()))?;
        let (users, warnings) = parse(&text, path);
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        if users.is_empty() {
            tracing::warn!("the htpasswd file {} holds no usable user", path.display());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                state: Mutex::new(State {
                    stamp,
                    users,
                    verified: HashMap::new(),
                }),
            }),
        })
    }

    /// Whether `password` is `user`'s. Runs bcrypt on a blocking thread
    /// unless the pair was verified less than [`CACHE_TTL`] ago.
    pub(crate) async fn verify(&self, user: &str, password: &str) -> bool {
        let key = cache_key(user, password);
        let hash = {
            let mut state = self.inner.lock();
            self.inner.reload_if_changed(&mut state);
            let now = Instant::now();
            if let Some(at) = state.verified.get(&key) {
                if now.duration_since(*at) < CACHE_TTL {
                    return true;
                }
                state.verified.remove(&key);
            }
            match state.users.get(user) {
                Some(hash) => (hash.clone(), true),
                // An unknown user costs a bcrypt check as a known one does,
                // so the time of a refusal does not tell which users exist.
                None => (
                    state
                        .users
                        .values()
                        .next()
                        .map_or(DECOY, String::as_str)
                        .to_owned(),
                    false,
                ),
            }
        };
        let (hash, known) = hash;
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false)
            && known;
        if ok {
            let mut state = self.inner.lock();
            if state.verified.len() >= CACHE_MAX {
                state.verified.clear();
            }
            state.verified.insert(key, Instant::now());
        }
        ok
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is replaced whole or not at all: still valid if poisoned.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reload_if_changed(&self, state: &mut State) {
        let now = stamp(&self.path);
        if now == state.stamp {
            return;
        }
        state.stamp = now;
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                let (users, warnings) = parse(&text, &self.path);
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
                tracing::info!(
                    "htpasswd file {} changed: {} user(s)",
                    self.path.display(),
                    users.len()
                );
                state.users = users;
                // A changed or removed password must not stay valid.
                state.verified.clear();
            }
            Err(e) => tracing::warn!(
                "cannot read the htpasswd file {}: {e}; keeping the previous users",
                self.path.display()
            ),
        }
    }
}

fn cache_key(user: &str, password: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((user.len() as u64).to_le_bytes());
    hasher.update(user.as_bytes());
    hasher.update(password.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bcrypt_entries_are_users() {
        let (users, warnings) = parse(
            "# comment\nalice:$2y$05$abcdefghijklmnopqrstuu5ZJ7GVDqQ3WTBkOzeF3.vRx8xvHL1Ra\n\
             bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\ncarol:$apr1$x$y\nnocolon\n",
            Path::new("htpasswd"),
        );
        assert_eq!(users.len(), 1);
        assert!(users.contains_key("alice"));
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("\"bob\""), "{warnings:?}");
    }

    #[test]
    fn the_cache_key_separates_user_from_password() {
        assert_ne!(cache_key("ab", "c"), cache_key("a", "bc"));
    }

    #[tokio::test]
    async fn right_and_wrong_passwords_and_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("secret", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
        let htpasswd = Htpasswd::load(&path).unwrap();
        assert!(htpasswd.verify("alice", "secret").await);
        assert!(htpasswd.verify("alice", "secret").await, "cached");
        assert!(!htpasswd.verify("alice", "wrong").await);
        assert!(!htpasswd.verify("nobody", "secret").await);

        // A new password for alice: the cached success is forgotten.
        let hash = bcrypt::hash("other", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash}\nbob:{hash}\n")).unwrap();
        assert!(!htpasswd.verify("alice", "secret").await);
        assert!(htpasswd.verify("alice", "other").await);
        assert!(htpasswd.verify("bob", "other").await);
    }

    #[tokio::test]
    async fn an_unknown_user_is_refused_as_slowly_as_a_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        // Cost 10: tens of milliseconds, far above a map lookup.
        let hash = bcrypt::hash("secret", 10).unwrap();
        std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
        let htpasswd = Htpasswd::load(&path).unwrap();
        let timed = |user: &'static str| {
            let htpasswd = &htpasswd;
            async move {
                let start = Instant::now();
                assert!(!htpasswd.verify(user, "guess").await);
                start.elapsed()
            }
        };
        let (mut known, mut unknown) = (Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            known = known.min(timed("alice").await);
            unknown = unknown.min(timed("mallory").await);
        }
        assert!(unknown * 2 > known, "unknown {unknown:?}, known {known:?}");
    }
}

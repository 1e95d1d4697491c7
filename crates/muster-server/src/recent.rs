//! Recently read facts every request needs (the caller's token, that an organization exists),
//! kept for a few seconds so that a request costs no database read for them.
//!
//! Entries live [`TTL`] at most. On this server every write that could make one wrong (a token
//! deleted, a user's permissions changed, an organization blocked or deleted) clears the cache
//! at once; another replica's write takes effect here within `TTL`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use muster_domain::{ApiToken, User};

/// How long an entry is trusted.
pub const TTL: Duration = Duration::from_secs(5);

/// Most entries held; past that the cache starts over.
const CAPACITY: usize = 100_000;

/// Key → value, each for [`TTL`].
#[derive(Debug)]
pub struct Recent<V> {
    entries: RwLock<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Default for Recent<V> {
    fn default() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
        }
    }
}

impl<V: Clone> Recent<V> {
    /// The value, if it was put less than [`TTL`] ago.
    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: String, value: V) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Changes the value in place, keeping its age.
    pub fn update(&self, key: &str, change: impl FnOnce(&mut V)) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, v)) = entries.get_mut(key) {
            change(v);
        }
    }

    pub fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// What the request path caches.
#[derive(Debug, Default)]
pub struct RecentFacts {
    /// Token secret hash → the token and its owner.
    pub tokens: Recent<(ApiToken, User)>,
    /// Ids of organizations known to exist.
    pub organizations: Recent<()>,
    /// Counts identity changes, for what holds a caller longer than a request.
    identity: tokio::sync::watch::Sender<u64>,
}

impl RecentFacts {
    /// A token, user, membership or organization changed, or a session ended: forget
    /// everything, and wake whoever holds a caller for longer than one request (a live event
    /// stream), so that it checks the caller again.
    pub fn identity_changed(&self) {
        self.tokens.clear();
        self.organizations.clear();
        self.identity.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever [`identity_changed`](Self::identity_changed) is called on this server.
    pub fn identity_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.identity.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_updates_and_clears() {
        let cache: Recent<u32> = Recent::default();
        assert_eq!(cache.get("a"), None);
        cache.put("a".into(), 1);
        assert_eq!(cache.get("a"), Some(1));
        cache.update("a", |v| *v = 2);
        assert_eq!(cache.get("a"), Some(2));
        cache.clear();
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn identity_changes_clear_and_wake() {
        let facts = RecentFacts::default();
        facts.organizations.put("org".into(), ());
        let mut changes = facts.identity_changes();
        assert!(!changes.has_changed().unwrap());
        facts.identity_changed();
        assert!(changes.has_changed().unwrap());
        assert_eq!(facts.organizations.get("org"), None);
        changes.mark_unchanged();
        assert!(!changes.has_changed().unwrap());
    }

    #[test]
    fn stale_entries_are_not_answered() {
        let cache: Recent<u32> = Recent::default();
        cache
            .entries
            .write()
            .unwrap()
            .insert("old".into(), (Instant::now().checked_sub(TTL).unwrap(), 1));
        assert_eq!(cache.get("old"), None);
    }
}

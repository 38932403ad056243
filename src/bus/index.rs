//! Where listeners are found: four maps by pattern shape, so a publish looks at the
//! listeners that match and no others — O(matching listeners), whatever the total.
//!
//! Shapes: exact (`bucket`, `key`), bucket-wide (`bucket`, `*`), key-wide (`*`, `key`)
//! and global (`*`, `*`). Each pattern's listeners are one shared slice, rebuilt when a
//! listener comes or goes, so choosing an event's listeners clones at most four `Arc`s
//! and allocates nothing. Not thread-safe by itself: the bus holds it in a lock.

use crate::bus::event::Event;
use crate::bus::listener::Core;
use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::sync::Arc;

/// The listeners of one pattern.
pub(crate) type List = Arc<[Arc<Core>]>;

/// The lists that match one event: at most one per pattern shape.
pub(crate) type Matches = [Option<List>; 4];

#[derive(Default)]
pub(crate) struct Index {
    exact: HashMap<Arc<str>, HashMap<Arc<str>, List, RandomState>, RandomState>,
    by_bucket: HashMap<Arc<str>, List, RandomState>,
    by_key: HashMap<Arc<str>, List, RandomState>,
    global: Option<List>,
    len: usize,
}

fn with(list: Option<&List>, l: Arc<Core>) -> List {
    let mut v: Vec<Arc<Core>> = list.map(|x| x.to_vec()).unwrap_or_default();
    v.push(l);
    v.into()
}

/// `list` without listener `id`, or None if that leaves it empty; and whether it was there.
fn without(list: &List, id: u64) -> (Option<List>, bool) {
    let v: Vec<Arc<Core>> = list.iter().filter(|x| x.id != id).cloned().collect();
    let found = v.len() != list.len();
    ((!v.is_empty()).then(|| v.into()), found)
}

fn remove_in(map: &mut HashMap<Arc<str>, List, RandomState>, name: &str, id: u64) -> bool {
    let Some(list) = map.get(name) else {
        return false;
    };
    let (rest, found) = without(list, id);
    match rest {
        Some(r) => {
            if let Some(slot) = map.get_mut(name) {
                *slot = r;
            }
        }
        None => {
            map.remove(name);
        }
    }
    found
}

impl Index {
    pub(crate) fn insert(&mut self, l: Arc<Core>) {
        self.len += 1;
        match (l.bucket.clone(), l.key.clone()) {
            (Some(b), Some(k)) => {
                let keys = self.exact.entry(b).or_default();
                let list = with(keys.get(&k), l);
                keys.insert(k, list);
            }
            (Some(b), None) => {
                let list = with(self.by_bucket.get(&b), l);
                self.by_bucket.insert(b, list);
            }
            (None, Some(k)) => {
                let list = with(self.by_key.get(&k), l);
                self.by_key.insert(k, list);
            }
            (None, None) => self.global = Some(with(self.global.as_ref(), l)),
        }
    }

    /// Removes the listener; returns whether it was there.
    pub(crate) fn remove(&mut self, l: &Core) -> bool {
        let found = match (&l.bucket, &l.key) {
            (Some(b), Some(k)) => {
                let Some(keys) = self.exact.get_mut(&**b) else {
                    return false;
                };
                let found = remove_in(keys, k, l.id);
                if keys.is_empty() {
                    self.exact.remove(&**b);
                }
                found
            }
            (Some(b), None) => remove_in(&mut self.by_bucket, b, l.id),
            (None, Some(k)) => remove_in(&mut self.by_key, k, l.id),
            (None, None) => match &self.global {
                Some(g) => {
                    let (rest, found) = without(g, l.id);
                    self.global = rest;
                    found
                }
                None => false,
            },
        };
        if found {
            self.len -= 1;
        }
        found
    }

    /// The lists whose pattern matches the event's bucket and key.
    pub(crate) fn matching(&self, e: &Event) -> Matches {
        [
            self.exact
                .get(&*e.bucket)
                .and_then(|k| k.get(&*e.key))
                .cloned(),
            self.by_bucket.get(&*e.bucket).cloned(),
            self.by_key.get(&*e.key).cloned(),
            self.global.clone(),
        ]
    }

    /// Moves every listener out.
    pub(crate) fn drain_into(self, out: &mut Vec<Arc<Core>>) {
        for keys in self.exact.into_values() {
            for list in keys.into_values() {
                out.extend(list.iter().cloned());
            }
        }
        for list in self
            .by_bucket
            .into_values()
            .chain(self.by_key.into_values())
            .chain(self.global)
        {
            out.extend(list.iter().cloned());
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

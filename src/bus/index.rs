//! Where listeners are found: four maps by pattern shape, so a publish looks at the
//! listeners that match and no others — O(matching listeners), whatever the total.
//!
//! Shapes: exact (`bucket`, `key`), bucket-wide (`bucket`, `*`), key-wide (`*`, `key`)
//! and global (`*`, `*`). Not thread-safe by itself: the bus holds it in a lock.

use crate::bus::event::Event;
use crate::bus::listener::Core;
use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::sync::Arc;

type List = Vec<Arc<Core>>;

#[derive(Default)]
pub(crate) struct Index {
    exact: HashMap<Arc<str>, HashMap<Arc<str>, List, RandomState>, RandomState>,
    by_bucket: HashMap<Arc<str>, List, RandomState>,
    by_key: HashMap<Arc<str>, List, RandomState>,
    global: List,
    len: usize,
}

impl Index {
    pub(crate) fn insert(&mut self, l: Arc<Core>) {
        self.len += 1;
        match (l.bucket.clone(), l.key.clone()) {
            (Some(b), Some(k)) => self
                .exact
                .entry(b)
                .or_default()
                .entry(k)
                .or_default()
                .push(l),
            (Some(b), None) => self.by_bucket.entry(b).or_default().push(l),
            (None, Some(k)) => self.by_key.entry(k).or_default().push(l),
            (None, None) => self.global.push(l),
        }
    }

    /// Removes the listener with `id`; returns whether it was there.
    pub(crate) fn remove(&mut self, l: &Core) -> bool {
        fn take(list: &mut List, id: u64) -> bool {
            let before = list.len();
            list.retain(|x| x.id != id);
            before != list.len()
        }
        let found = match (&l.bucket, &l.key) {
            (Some(b), Some(k)) => {
                let mut found = false;
                if let Some(keys) = self.exact.get_mut(b) {
                    if let Some(list) = keys.get_mut(k) {
                        found = take(list, l.id);
                        if list.is_empty() {
                            keys.remove(k);
                        }
                    }
                    if keys.is_empty() {
                        self.exact.remove(b);
                    }
                }
                found
            }
            (Some(b), None) => remove_in(&mut self.by_bucket, b, l.id),
            (None, Some(k)) => remove_in(&mut self.by_key, k, l.id),
            (None, None) => take(&mut self.global, l.id),
        };
        if found {
            self.len -= 1;
        }
        found
    }

    /// Every listener whose pattern matches the event's bucket and key.
    pub(crate) fn matching(&self, e: &Event, out: &mut Vec<Arc<Core>>) {
        if let Some(list) = self.exact.get(&*e.bucket).and_then(|k| k.get(&*e.key)) {
            out.extend(list.iter().cloned());
        }
        if let Some(list) = self.by_bucket.get(&*e.bucket) {
            out.extend(list.iter().cloned());
        }
        if let Some(list) = self.by_key.get(&*e.key) {
            out.extend(list.iter().cloned());
        }
        out.extend(self.global.iter().cloned());
    }

    /// Moves every listener out.
    pub(crate) fn drain_into(self, out: &mut Vec<Arc<Core>>) {
        for keys in self.exact.into_values() {
            out.extend(keys.into_values().flatten());
        }
        out.extend(self.by_bucket.into_values().flatten());
        out.extend(self.by_key.into_values().flatten());
        out.extend(self.global);
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

fn remove_in(map: &mut HashMap<Arc<str>, List, RandomState>, name: &Arc<str>, id: u64) -> bool {
    let Some(list) = map.get_mut(name) else {
        return false;
    };
    let before = list.len();
    list.retain(|x| x.id != id);
    let found = before != list.len();
    if list.is_empty() {
        map.remove(name);
    }
    found
}

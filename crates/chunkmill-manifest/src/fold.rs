//! Scans folded into the combine as they arrive: each file's metadata is held once.
//!
//! The combine takes an array's attributes, attribute types and group attributes from the
//! first input (after ordering) and reads only a few attributes of the others: the CF
//! encoding, the concat coordinate's `units`/`calendar` and its `bounds`. The files of a
//! collection describe each variable alike, so holding every file's attributes until the
//! combine held the same maps ten thousand times (most of the memory of a 10 000-file
//! virtualize). [`Fold::trim`] runs on each scan as it arrives: an array whose attributes and
//! attribute types are equal (in order) to those of the first scan that had the array keeps
//! only the attributes the combine compares; equal group attributes are emptied. What was
//! trimmed is recorded by input, and [`Fold::restore`] gives the input that ends up first its
//! full metadata back, so the output and every check are what they were with nothing
//! trimmed. A scan whose metadata differs is kept whole. Codec configurations, which every
//! input keeps (they are compared), are rebuilt at their size.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Map, Value};

use crate::array::VirtualDataset;
use crate::combine::{CF_ENCODING_ATTRIBUTES, CONCAT_COORDINATE_ATTRIBUTES};

/// The attributes the combine (and the re-basing of times before it) reads from an input
/// that is not the first: compared, re-based, or naming the bounds variable.
fn compared(name: &str) -> bool {
    CF_ENCODING_ATTRIBUTES.contains(&name)
        || CONCAT_COORDINATE_ATTRIBUTES.contains(&name)
        || name == "bounds"
}

/// Maps equal key by key in the same order (serde_json's ordered map compares as a set).
fn same_in_order(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// A lock that a panicking scan thread left poisoned still guards whole maps: each change
/// under it is one insert.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The full metadata of the first scan that had an array.
struct Reference {
    attributes: Map<String, Value>,
    attribute_types: BTreeMap<String, String>,
}

type Groups = BTreeMap<String, Map<String, Value>>;

/// What one input lost to trimming: the arrays, and whether its group attributes.
#[derive(Default)]
struct Trimmed {
    arrays: Vec<Arc<str>>,
    groups: bool,
}

/// Reference metadata and what was trimmed from each input (by its dataset's name, which is
/// its path or URL: inputs are distinct files).
#[derive(Default)]
pub(crate) struct Fold {
    references: Mutex<HashMap<Arc<str>, Arc<Reference>>>,
    groups: Mutex<Option<Arc<Groups>>>,
    trimmed: Mutex<HashMap<String, Trimmed>>,
}

impl Fold {
    /// Trims `dataset` where its metadata equals the references (the first scan's to arrive
    /// becomes the reference of each array it has).
    pub(crate) fn trim(&self, dataset: &mut VirtualDataset) {
        let mut trimmed = Trimmed::default();
        for (key, array) in &mut dataset.arrays {
            let m = &mut array.metadata;
            // A codec's configuration grew one insert at a time, to a capacity of several
            // entries for its one or two: rebuilt at its size (same entries, same order).
            for codec in &mut m.codecs {
                codec.configuration = std::mem::take(&mut codec.configuration)
                    .into_iter()
                    .collect();
            }
            let reference = {
                let mut references = lock(&self.references);
                match references.get(key.as_str()) {
                    Some(r) => r.clone(),
                    None => {
                        references.insert(
                            Arc::from(key.as_str()),
                            Arc::new(Reference {
                                attributes: m.attributes.clone(),
                                attribute_types: m.attribute_types.clone(),
                            }),
                        );
                        continue;
                    }
                }
            };
            if !same_in_order(&m.attributes, &reference.attributes)
                || m.attribute_types != reference.attribute_types
            {
                continue;
            }
            // A new map: one trimmed in place keeps its whole allocation.
            m.attributes = std::mem::take(&mut m.attributes)
                .into_iter()
                .filter(|(name, _)| compared(name))
                .collect();
            m.attribute_types = BTreeMap::new();
            trimmed.arrays.push(Arc::from(key.as_str()));
        }
        let reference = {
            let mut groups = lock(&self.groups);
            match &*groups {
                Some(g) => Some(g.clone()),
                None => {
                    *groups = Some(Arc::new(dataset.groups.clone()));
                    None
                }
            }
        };
        if let Some(reference) = reference {
            let same = dataset.groups.len() == reference.len()
                && dataset
                    .groups
                    .iter()
                    .zip(reference.iter())
                    .all(|((k, a), (l, b))| k == l && same_in_order(a, b));
            if same {
                for attributes in dataset.groups.values_mut() {
                    *attributes = Map::new();
                }
                trimmed.groups = true;
            }
        }
        if !trimmed.arrays.is_empty() || trimmed.groups {
            lock(&self.trimmed).insert(dataset.name.clone(), trimmed);
        }
    }

    /// Gives `dataset` back the metadata [`Fold::trim`] took from it. The attributes it kept
    /// are its own (re-based units stay re-based); the others are the reference's, which
    /// were equal to its own.
    pub(crate) fn restore(&self, dataset: &mut VirtualDataset) {
        let Some(trimmed) = lock(&self.trimmed).remove(&dataset.name) else {
            return;
        };
        let references = lock(&self.references);
        for key in &trimmed.arrays {
            let (Some(array), Some(reference)) =
                (dataset.arrays.get_mut(&**key), references.get(key))
            else {
                continue;
            };
            let m = &mut array.metadata;
            let mut attributes = reference.attributes.clone();
            for (name, value) in std::mem::take(&mut m.attributes) {
                attributes.insert(name, value);
            }
            m.attributes = attributes;
            m.attribute_types = reference.attribute_types.clone();
        }
        if trimmed.groups {
            if let Some(reference) = &*lock(&self.groups) {
                dataset.groups = (**reference).clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array::{ArrayMetadata, ManifestArray};
    use crate::error::Result;
    use crate::manifest::ChunkManifest;
    use serde_json::json;

    fn dataset(name: &str, attributes: Value, title: &str) -> Result<VirtualDataset> {
        let metadata = ArrayMetadata {
            shape: vec![4],
            dtype: "<f4".into(),
            chunk_shape: vec![4],
            fill_value: json!(0),
            codecs: Vec::new(),
            dimension_names: vec!["time".into()],
            attributes: attributes.as_object().cloned().unwrap_or_default(),
            attribute_types: BTreeMap::from([("scale_factor".into(), "float32".into())]),
        };
        let array = ManifestArray {
            metadata,
            manifest: ChunkManifest::new(vec![1])?,
        };
        let mut groups = Groups::new();
        groups.insert(
            String::new(),
            json!({"title": title})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        Ok(VirtualDataset {
            name: name.into(),
            urls: vec![format!("file:///{name}")],
            groups,
            arrays: BTreeMap::from([("air".to_string(), array)]),
            encodings: BTreeMap::new(),
        })
    }

    #[test]
    fn equal_metadata_is_held_once_and_restored_whole() -> Result<()> {
        let attrs = json!({"long_name": "air", "units": "K", "scale_factor": 0.5, "history": "x"});
        let fold = Fold::default();
        let mut first = dataset("a.nc", attrs.clone(), "t")?;
        let mut second = dataset("b.nc", attrs.clone(), "t")?;
        let original = second.clone();
        fold.trim(&mut first);
        fold.trim(&mut second);
        // The first keeps everything; the second only what the combine compares.
        assert_eq!(first.arrays["air"].metadata.attributes.len(), 4);
        let kept: Vec<&str> = second.arrays["air"]
            .metadata
            .attributes
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(kept, ["units", "scale_factor"]);
        assert!(second.arrays["air"].metadata.attribute_types.is_empty());
        assert!(second.groups[""].is_empty());
        fold.restore(&mut second);
        assert_eq!(
            second.arrays["air"].metadata,
            original.arrays["air"].metadata
        );
        assert_eq!(second.groups, original.groups);
        Ok(())
    }

    #[test]
    fn differing_metadata_is_kept_whole() -> Result<()> {
        let fold = Fold::default();
        let mut first = dataset("a.nc", json!({"units": "K", "history": "x"}), "t")?;
        let mut other = dataset("c.nc", json!({"units": "K", "history": "y"}), "u")?;
        let o = other.clone();
        fold.trim(&mut first);
        fold.trim(&mut other);
        assert_eq!(other.arrays["air"].metadata, o.arrays["air"].metadata);
        assert_eq!(other.groups, o.groups);
        // Restoring what was not trimmed changes nothing.
        fold.restore(&mut other);
        assert_eq!(other.arrays["air"].metadata, o.arrays["air"].metadata);
        Ok(())
    }
}

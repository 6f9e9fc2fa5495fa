//! The links of a group, read from its object header with hdf5-reader's public building blocks.
//!
//! hdf5-reader's `Group::members` opens every child to classify it, so one child it cannot
//! parse (a virtual dataset) makes the whole group fail. Listing the links ourselves costs no
//! child header, tells hard links from soft and external ones, and gives the addresses that
//! de-duplicate aliases.

use hdf5_reader::btree_v1::collect_btree_v1_leaves_storage;
use hdf5_reader::btree_v2::{collect_btree_v2_records_storage, BTreeV2Header, BTreeV2Record};
use hdf5_reader::error::{Error as H5Error, Result as H5Result};
use hdf5_reader::fractal_heap::{FractalHeap, FractalHeapDirectBlockCache};
use hdf5_reader::io::Cursor;
use hdf5_reader::local_heap::LocalHeap;
use hdf5_reader::messages::link::{self, LinkMessage, LinkTarget};
use hdf5_reader::messages::HdfMessage;
use hdf5_reader::object_header::ObjectHeader;
use hdf5_reader::symbol_table::SymbolTableNode;
use hdf5_reader::Storage;

/// Where a link leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// An object header address (relative to the superblock).
    Hard(u64),
    /// A path in this file, absolute or relative to the group.
    Soft(String),
    /// An object in another file.
    External { file: String, path: String },
}

/// One named link of a group.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub name: String,
    pub target: Target,
    /// Its place in the order the links were made, where the group tracks it (netCDF-4
    /// groups do: it is the order netCDF4 and xarray list variables in).
    pub creation_order: Option<u64>,
}

impl From<LinkMessage> for Link {
    fn from(m: LinkMessage) -> Self {
        let target = match m.target {
            LinkTarget::Hard { address } => Target::Hard(address),
            LinkTarget::Soft { path } => Target::Soft(path),
            LinkTarget::External { filename, path } => Target::External {
                file: filename,
                path,
            },
        };
        Link {
            name: m.name,
            target,
            creation_order: m.creation_order,
        }
    }
}

/// The kind of object an object header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Group,
    Dataset,
    /// A committed datatype, or anything else that is neither.
    Other,
}

/// Classifies an object header as hdf5-reader does.
pub(crate) fn classify(header: &ObjectHeader) -> ObjectKind {
    let mut dataset = false;
    let mut attributes = false;
    for message in &header.messages {
        match message {
            HdfMessage::SymbolTable(_)
            | HdfMessage::Link(_)
            | HdfMessage::LinkInfo(_)
            | HdfMessage::GroupInfo(_) => return ObjectKind::Group,
            HdfMessage::Dataspace(_)
            | HdfMessage::DataLayout(_)
            | HdfMessage::FillValue(_)
            | HdfMessage::FilterPipeline(_) => dataset = true,
            HdfMessage::Attribute(_) | HdfMessage::AttributeInfo(_) => attributes = true,
            _ => {}
        }
    }
    if dataset {
        ObjectKind::Dataset
    } else if attributes {
        ObjectKind::Group
    } else {
        ObjectKind::Other
    }
}

/// The links of the group whose object header is `header`, in storage order.
pub(crate) fn group_links(
    storage: &dyn Storage,
    header: &ObjectHeader,
    offset_size: u8,
    length_size: u8,
) -> H5Result<Vec<Link>> {
    let mut links = Vec::new();
    for message in &header.messages {
        match message {
            HdfMessage::SymbolTable(st) => {
                return symbol_table_links(
                    storage,
                    st.btree_address,
                    st.heap_address,
                    offset_size,
                    length_size,
                );
            }
            HdfMessage::Link(l) => links.push(Link::from(l.clone())),
            HdfMessage::LinkInfo(info)
                if !Cursor::is_undefined_offset(info.fractal_heap_address, offset_size) =>
            {
                links.extend(dense_links(
                    storage,
                    info.fractal_heap_address,
                    info.btree_name_index_address,
                    offset_size,
                    length_size,
                )?);
            }
            _ => {}
        }
    }
    Ok(links)
}

/// Old-style groups: a v1 B-tree of symbol-table nodes, names in a local heap.
fn symbol_table_links(
    storage: &dyn Storage,
    btree_address: u64,
    heap_address: u64,
    offset_size: u8,
    length_size: u8,
) -> H5Result<Vec<Link>> {
    let heap = LocalHeap::parse_at_storage(storage, heap_address, offset_size, length_size)?;
    let segment_len = usize::try_from(heap.data_segment_size)
        .map_err(|_| H5Error::InvalidData("local heap segment exceeds usize".into()))?;
    let segment = storage.read_range(heap.data_segment_address, segment_len)?;
    let name_at = |offset: u64| -> H5Result<String> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|&s| s < segment.len())
            .ok_or(H5Error::OffsetOutOfBounds(offset))?;
        let rest = &segment[start..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| H5Error::InvalidData("local heap name is not NUL-terminated".into()))?;
        Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
    };

    let leaves = collect_btree_v1_leaves_storage(
        storage,
        btree_address,
        offset_size,
        length_size,
        None,
        &[],
        None,
    )?;
    let entry_len = 2 * usize::from(offset_size) + 4 + 4 + 16;
    let mut links = Vec::new();
    for (_, node_address) in leaves {
        let prefix = storage.read_range(node_address, 8)?;
        let count = usize::from(u16::from_le_bytes([prefix[6], prefix[7]]));
        let node = storage.read_range(node_address, 8 + count * entry_len)?;
        let node =
            SymbolTableNode::parse(&mut Cursor::new(node.as_ref()), offset_size, length_size)?;
        for entry in node.entries {
            let name = name_at(entry.link_name_offset)?;
            let target = if entry.cache_type == 2 {
                let offset = u32::from_le_bytes([
                    entry.scratch[0],
                    entry.scratch[1],
                    entry.scratch[2],
                    entry.scratch[3],
                ]);
                Target::Soft(name_at(u64::from(offset))?)
            } else {
                Target::Hard(entry.object_header_address)
            };
            // Old-style groups keep no creation order; their links are listed by name.
            links.push(Link {
                name,
                target,
                creation_order: None,
            });
        }
    }
    Ok(links)
}

/// New-style dense groups: link messages in a fractal heap, indexed by a v2 B-tree of name
/// hashes.
fn dense_links(
    storage: &dyn Storage,
    heap_address: u64,
    name_index_address: u64,
    offset_size: u8,
    length_size: u8,
) -> H5Result<Vec<Link>> {
    let heap = FractalHeap::parse_at_storage(storage, heap_address, offset_size, length_size)?;
    let index =
        BTreeV2Header::parse_at_storage(storage, name_index_address, offset_size, length_size)?;
    let records = collect_btree_v2_records_storage(
        storage,
        &index,
        offset_size,
        length_size,
        None,
        &[],
        None,
    )?;
    let mut blocks = FractalHeapDirectBlockCache::default();
    let mut links = Vec::with_capacity(records.len());
    for record in records {
        let heap_id = match record {
            BTreeV2Record::LinkNameHash { heap_id, .. }
            | BTreeV2Record::CreationOrder { heap_id, .. } => heap_id,
            _ => continue,
        };
        let bytes = heap.get_object_storage_cached_with_registry(
            &heap_id,
            storage,
            offset_size,
            length_size,
            &mut blocks,
            None,
        )?;
        let message = link::parse(
            &mut Cursor::new(&bytes),
            offset_size,
            length_size,
            bytes.len(),
        )?;
        links.push(Link::from(message));
    }
    Ok(links)
}

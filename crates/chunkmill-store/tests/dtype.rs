//! [`DataType`] against the metadata zarr-python 3 writes for every data type, in Zarr v2 and
//! v3: `fixtures/zarr_python_dtypes.json`, made by `make_dtype_fixture.py` with zarr-python.

use chunkmill_store::DataType;
use serde_json::Value;

fn cases() -> Vec<Value> {
    let text = include_str!("fixtures/zarr_python_dtypes.json");
    let doc: Value = serde_json::from_str(text).expect("fixture is JSON");
    doc["cases"].as_array().expect("cases").clone()
}

fn parse(case: &Value) -> DataType {
    let codecs = case["codecs"].as_array().cloned().unwrap_or_default();
    if case["zarr_format"] == 2 {
        DataType::from_v2(&case["data_type"], &codecs).expect("v2 dtype parses")
    } else {
        DataType::from_v3(&case["data_type"]).expect("v3 data_type parses")
    }
}

#[test]
fn every_data_type_zarr_python_writes_parses_and_prints_back() {
    let cases = cases();
    assert!(cases.len() > 50, "the fixture covers both formats");
    for case in &cases {
        let dtype = parse(case);
        let written = &case["data_type"];
        if case["zarr_format"] == 2 {
            assert_eq!(&dtype.v2_dtype(), written, "{case}");
        } else {
            assert_eq!(&dtype.to_v3(), written, "{case}");
        }
        assert_eq!(
            dtype.to_string(),
            case["numpy"].as_str().unwrap_or(""),
            "{case}"
        );
        assert_eq!(
            dtype.size().map(|s| s as u64),
            case["itemsize"].as_u64(),
            "{case}"
        );
    }
}

#[test]
fn every_fill_value_zarr_python_writes_round_trips_through_its_bytes() {
    for case in cases() {
        let dtype = parse(&case);
        let fill = &case["fill_value"];
        let bytes = dtype.fill_bytes(fill).unwrap_or_else(|| panic!("{case}"));
        if let Some(size) = dtype.size() {
            assert_eq!(bytes.len(), size, "{case}");
        }
        let back = dtype.fill_json(&bytes).unwrap_or_else(|| panic!("{case}"));
        // zarr-python writes a float fill as a float (`0.0`, `1.5`); ints as ints.
        let same = match (&back, fill) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            _ => &back == fill,
        };
        assert!(same, "{case}: printed back as {back}");
    }
}

#[test]
fn the_v2_and_v3_spellings_of_one_type_are_the_same_type() {
    let cases = cases();
    let (v2, v3): (Vec<&Value>, Vec<&Value>) = cases.iter().partition(|c| c["zarr_format"] == 2);
    assert_eq!(v2.len(), v3.len());
    for (a, b) in v2.iter().zip(&v3) {
        assert_eq!(parse(a), parse(b), "{a} / {b}");
    }
}

fn record(text: &str, width: usize) -> Vec<u8> {
    let mut r = (text.len() as u32).to_le_bytes().to_vec();
    r.extend_from_slice(text.as_bytes());
    r.resize(width, 0);
    r
}

#[test]
fn variable_length_text_is_read_as_records_as_wide_as_its_longest_element() {
    use chunkmill_store::zarr::{self, ArraySpec, Compressor, Encoding, Node, ZarrArray};
    use chunkmill_store::Store;
    let store = Store::open("memory://dtype-text-records").expect("memory store");
    for format in [2u8, 3] {
        let spec = ArraySpec {
            path: format!("names{format}"),
            zarr_format: format,
            shape: vec![5],
            dtype: DataType::String,
            chunks: vec![2],
            inner_chunks: None,
            fill_value: serde_json::json!(""),
            encoding: Encoding::Compressor(Compressor::Zstd(1)),
            dimension_names: Some(vec![Some("y".into())]),
            attributes: serde_json::Map::new(),
        };
        zarr::create_array(&store, &spec).expect("create");
        let writer = ZarrArray::open(&store, &spec.path).expect("open");
        // Records of any one width are taken: the chunk's bytes over its elements.
        let chunk = [record("Zürich", 12), record("", 12)].concat();
        writer.write_chunk(&[0], chunk).expect("write");
        writer
            .write_chunk(&[1], [record("a", 5), record("b", 5)].concat())
            .expect("write");
        let reader = ZarrArray::open(&store, &spec.path).expect("reopen");
        let widest = 4 + "Zürich".len();
        assert_eq!(reader.info().item_size, widest);
        assert_eq!(
            reader.read_chunk(&[0]).expect("read"),
            [record("Zürich", widest), record("", widest)].concat()
        );
        // A chunk never written is the fill value, "".
        assert_eq!(
            reader.read_chunk(&[2]).expect("read"),
            [record("", widest), record("", widest)].concat()
        );
        let listed = zarr::list_nodes(&store).expect("list");
        let measured = listed.iter().find_map(|n| match n {
            Node::Array(a) if a.path == spec.path => Some(a.item_size),
            _ => None,
        });
        assert_eq!(measured, Some(widest), "a plan counts the measured width");
    }
}

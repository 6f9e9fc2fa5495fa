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

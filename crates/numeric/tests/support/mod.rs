//! Reading the numpy / scikit-learn reference (tests/fixtures/reference.json, written by
//! tools/make_numeric_reference.py); shared by the numeric, spectral and fit tests.
#![allow(dead_code)]

use ndarray::Array2;
use serde_json::Value;

/// The whole reference file.
pub fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../numeric/tests/fixtures/reference.json"
    );
    let text = std::fs::read_to_string(path).expect("reference fixture");
    serde_json::from_str(&text).unwrap()
}

/// A JSON list of rows as a matrix.
pub fn matrix(v: &Value) -> Array2<f64> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let (n, d) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((n, d), rows.into_iter().flatten().collect()).unwrap()
}

/// A JSON list as a vector.
pub fn vector(v: &Value) -> Vec<f64> {
    serde_json::from_value(v.clone()).unwrap()
}

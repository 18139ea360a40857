//! A complete table read whole, with typed column access that names the table in errors: how
//! the stages and the report read a result table (polars underneath; lazy filters before
//! collecting through [`Frame::query`]).

use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::manifest::Manifest;
use crate::read::scan;
use crate::run::{RunLayout, TableName};
use crate::{Result, StoreError};

/// A table (or the rows of one a query kept), collected.
#[derive(Clone, Debug)]
pub struct Frame {
    path: PathBuf,
    df: DataFrame,
}

impl Frame {
    /// The table at `path`, `None` when it is absent or incomplete (no manifest).
    /// A table whose data is not what its manifest vouches for is an error.
    pub fn open(path: &Path) -> Result<Option<Frame>> {
        let hint = Manifest::read_for(path)
            .map_or_else(String::new, |m| format!("rerun `helixlab {}`", m.stage));
        if Manifest::verified_for(path, &hint)?.is_none() {
            return Ok(None);
        }
        Self::query(path, |lf| lf).map(Some)
    }

    /// The run's `table`, which must be complete and intact (the error names the command that
    /// writes it).
    pub fn require(run: &RunLayout, table: TableName) -> Result<Frame> {
        Self::check(run, table)?;
        Self::query(&run.path(table), |lf| lf)
    }

    /// Checks, without reading its rows, that the run's `table` is complete and intact (the
    /// error names the command that writes it).
    pub fn check(run: &RunLayout, table: TableName) -> Result<()> {
        let path = run.path(table);
        if Manifest::verified_for(&path, &format!("rerun `helixlab {}`", table.writer))?.is_none() {
            return Err(run.missing(table));
        }
        Ok(())
    }

    /// The rows of the table at `path` that `query` keeps (filters, sorts), collected.
    pub fn query(path: &Path, query: impl FnOnce(LazyFrame) -> LazyFrame) -> Result<Frame> {
        let df = query(scan(path)?).collect().map_err(pl(path))?;
        Ok(Frame {
            path: path.to_path_buf(),
            df,
        })
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.df.height()
    }

    /// The table's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The polars frame, for what the typed getters do not cover.
    pub fn df(&self) -> &DataFrame {
        &self.df
    }

    fn column(&self, c: &str) -> Result<&Column> {
        self.df.column(c).map_err(pl(&self.path))
    }

    /// A numeric column as f64 (nulls as NaN).
    pub fn f64(&self, c: &str) -> Result<Vec<f64>> {
        let s = self
            .column(c)?
            .cast(&DataType::Float64)
            .map_err(pl(&self.path))?;
        Ok(s.f64()
            .map_err(pl(&self.path))?
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect())
    }

    /// An integer column as i64 (nulls as 0).
    pub fn i64(&self, c: &str) -> Result<Vec<i64>> {
        let s = self
            .column(c)?
            .cast(&DataType::Int64)
            .map_err(pl(&self.path))?;
        Ok(s.i64()
            .map_err(pl(&self.path))?
            .iter()
            .map(|v| v.unwrap_or(0))
            .collect())
    }

    /// A string column (nulls as "").
    pub fn str(&self, c: &str) -> Result<Vec<String>> {
        Ok(self
            .column(c)?
            .str()
            .map_err(pl(&self.path))?
            .iter()
            .map(|v| v.unwrap_or("").to_string())
            .collect())
    }

    /// A boolean column (nulls as false).
    pub fn bool(&self, c: &str) -> Result<Vec<bool>> {
        Ok(self
            .column(c)?
            .bool()
            .map_err(pl(&self.path))?
            .iter()
            .map(|v| v.unwrap_or(false))
            .collect())
    }

    /// A vector column (`FixedSizeList<Float32, d>`): its width and the row-major values.
    pub fn vectors(&self, c: &str) -> Result<(usize, Vec<f32>)> {
        let arr = self.column(c)?.array().map_err(pl(&self.path))?;
        let d = arr.width();
        let flat = arr
            .get_inner()
            .f32()
            .map_err(pl(&self.path))?
            .into_no_null_iter()
            .collect();
        Ok((d, flat))
    }
}

fn pl(path: &Path) -> impl Fn(PolarsError) -> StoreError + '_ {
    move |source| StoreError::Polars {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{tables, StageRun};
    use crate::table::{Table, Values};

    #[test]
    fn typed_columns_and_missing_tables() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunLayout::new(dir.path());
        let e = Frame::require(&run, tables::SPLIT).unwrap_err().to_string();
        assert!(
            e.contains("split.parquet") && e.contains("helixlab fit"),
            "{e}"
        );
        assert!(Frame::open(&run.path(tables::SPLIT)).unwrap().is_none());
        let t = Table::new()
            .column("x", Values::I64(vec![3, 4]))
            .column("held_out", Values::Bool(vec![true, false]))
            .column(
                "v",
                Values::Vector {
                    d: 2,
                    values: vec![1.0, 2.0, 3.0, 4.0],
                },
            );
        StageRun::new("t", serde_json::json!({}))
            .write_table(&run, tables::SPLIT, &t)
            .unwrap();
        let f = Frame::require(&run, tables::SPLIT).unwrap();
        assert_eq!(f.i64("x").unwrap(), vec![3, 4]);
        assert_eq!(f.f64("x").unwrap(), vec![3.0, 4.0]);
        assert_eq!(f.bool("held_out").unwrap(), vec![true, false]);
        assert_eq!(f.vectors("v").unwrap(), (2, vec![1.0, 2.0, 3.0, 4.0]));
        let e = f.str("nope").unwrap_err().to_string();
        assert!(e.contains("split.parquet"), "{e}");
        let kept = Frame::query(&run.path(tables::SPLIT), |lf| {
            lf.filter(col("x").eq(lit(4)))
        });
        assert_eq!(kept.unwrap().height(), 1);
    }
}

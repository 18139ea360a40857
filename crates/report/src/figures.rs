//! The figures, drawn with plotters into PNG files.

use std::path::Path;

use plotters::prelude::*;

use crate::{Correctness, ReportError, Result};

fn fig_err(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Figure {
        path: path.to_path_buf(),
        message,
    }
}

/// Correct (dark) and wrong (light) problems over the (a, b) grid.
pub fn accuracy_heatmap(c: &Correctness, path: &Path) -> Result<()> {
    let err = fig_err(path);
    let a_max = c.rows.iter().map(|r| r.0).max().unwrap_or(0) + 1;
    let b_max = c.rows.iter().map(|r| r.1).max().unwrap_or(0) + 1;
    let a_min = c.rows.iter().map(|r| r.0).min().unwrap_or(0);
    let b_min = c.rows.iter().map(|r| r.1).min().unwrap_or(0);
    let root = BitMapBackend::new(path, (720, 680)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Correct answers over (a, b)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(a_min..a_max, b_min..b_max)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("a")
        .y_desc("b")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(c.rows.iter().map(|&(a, b, ok, _)| {
            let color = if ok {
                RGBColor(30, 90, 160)
            } else {
                RGBColor(240, 170, 60)
            };
            Rectangle::new([(a, b), (a + 1, b + 1)], color.filled())
        }))
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))
}

/// Histogram of (predicted - true) over wrong answers that are numbers, clipped to +-30.
/// Returns how many such answers there are.
pub fn error_histogram(c: &Correctness, path: &Path) -> Result<usize> {
    let err = fig_err(path);
    let errors: Vec<i64> = c
        .rows
        .iter()
        .filter(|r| !r.2)
        .filter_map(|r| r.3)
        .map(|e| e.clamp(-30, 30))
        .collect();
    let mut counts = [0u32; 61];
    for e in &errors {
        counts[(e + 30) as usize] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    let root = BitMapBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Wrong answers: predicted - true ({} answers, clipped to ±30)",
                errors.len()
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((-30i64..30i64).into_segmented(), 0u32..top + top / 10 + 1)
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("predicted - true")
        .y_desc("count")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .margin(1)
                .style(RGBColor(30, 90, 160).filled())
                .data(errors.iter().map(|&e| (e, 1u32))),
        )
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(errors.len())
}

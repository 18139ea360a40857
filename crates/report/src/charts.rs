//! Generic charts the analysis figures are made of: grids of line/dot panels and of heatmaps.

use std::path::Path;

use plotters::prelude::*;

use crate::{ReportError, Result};

/// How a series is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mark {
    /// Connected line.
    Line,
    /// Dots.
    Dots,
}

/// One series of a panel.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label (empty: not in the legend).
    pub label: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
    /// Line or dots.
    pub mark: Mark,
    /// Colour.
    pub color: RGBColor,
}

/// One panel.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// x axis label.
    pub x_desc: String,
    /// y axis label.
    pub y_desc: String,
    /// Series.
    pub series: Vec<Series>,
    /// Vertical reference lines (e.g. the paper's periods).
    pub vlines: Vec<f64>,
    /// Tick labels of an x axis drawn on a transformed scale (log2(k + 1) shown as k): the
    /// label of a tick at x, empty to leave it blank.
    pub x_ticks: Option<fn(f64) -> String>,
}

/// The n-th colour of a qualitative palette.
pub fn palette(i: usize) -> RGBColor {
    const P: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    P[i % P.len()]
}

/// A colour on the hue circle, for classes such as x mod T.
pub fn hue(i: usize, n: usize) -> RGBColor {
    let h = i as f64 / n.max(1) as f64;
    let (r, g, b) = HSLColor(h, 0.75, 0.45).rgb();
    RGBColor(r, g, b)
}

fn err(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Figure {
        path: path.to_path_buf(),
        message,
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    // A flat series gets a visible span rather than a degenerate axis.
    let pad = if hi - lo < 1e-12 {
        (hi.abs() * 0.1).max(0.5)
    } else {
        (hi - lo) * 0.05
    };
    (lo - pad, hi + pad)
}

/// A tick label of an axis whose data are whole numbers (layers, ranks, k): whole ticks as
/// integers, the ticks in between left blank (no "layer 0.4").
fn whole_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// Whether every x of the panel is a whole number.
fn whole_x(p: &Panel) -> bool {
    p.series
        .iter()
        .flat_map(|s| s.points.iter())
        .all(|q| (q.0 - q.0.round()).abs() < 1e-9)
}

/// Panels in a grid of `cols` columns, each `w x h` pixels, with an overall title.
pub fn panels(
    path: &Path,
    title: &str,
    panels: &[Panel],
    cols: usize,
    w: u32,
    h: u32,
) -> Result<()> {
    let e = err(path);
    let cols = cols.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    let root =
        BitMapBackend::new(path, (w * cols as u32, h * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|x| e(x.to_string()))?;
    for (cell, p) in root.split_evenly((rows, cols)).iter().zip(panels) {
        let (x0, x1) = bounds(p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0)));
        let (y0, y1) = bounds(p.series.iter().flat_map(|s| s.points.iter().map(|q| q.1)));
        // The legend gets a strip of its own beside the plot, off the data.
        let labelled: Vec<&Series> = p.series.iter().filter(|s| !s.label.is_empty()).collect();
        let widest = labelled.iter().map(|s| s.label.chars().count()).max();
        let (area, strip) = match widest {
            Some(n) => {
                let w = (26 + 7 * n as u32).clamp(60, 180);
                let (a, b) = cell.split_horizontally(cell.dim_in_pixel().0.saturating_sub(w));
                (a, Some(b))
            }
            None => (cell.clone(), None),
        };
        if let Some(strip) = &strip {
            for (i, s) in labelled.iter().enumerate() {
                let y = 44 + 16 * i as i32;
                strip
                    .draw(&Rectangle::new([(2, y - 4), (14, y + 4)], s.color.filled()))
                    .map_err(|x| e(x.to_string()))?;
                strip
                    .draw(&Text::new(
                        s.label.clone(),
                        (18, y - 6),
                        ("sans-serif", 11).into_font(),
                    ))
                    .map_err(|x| e(x.to_string()))?;
            }
        }
        let mut chart = ChartBuilder::on(&area)
            .caption(&p.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(52)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|x| e(x.to_string()))?;
        let whole = whole_x(p);
        let span = (x1 - x0).max(1.0);
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(WHITE.mix(0.0))
            .x_desc(&p.x_desc)
            .y_desc(&p.y_desc)
            // Whole-number axes (layers 0..27) get up to 15 ticks, all of them whole.
            .x_labels(if whole {
                (span as usize + 1).min(15)
            } else {
                6
            })
            .y_labels(6)
            .label_style(("sans-serif", 12));
        let transformed = p.x_ticks.map(|f| move |v: &f64| f(*v));
        if let Some(f) = &transformed {
            mesh.x_label_formatter(f);
        } else if whole {
            mesh.x_label_formatter(&|v| whole_tick(*v));
        }
        // Counts read as counts (1000, not 1000.0).
        let counts = y1 - y0 > 10.0
            && p.series
                .iter()
                .flat_map(|s| s.points.iter())
                .all(|q| !q.1.is_finite() || (q.1 - q.1.round()).abs() < 1e-9);
        if counts {
            mesh.y_label_formatter(&|v| format!("{}", v.round() as i64));
        }
        mesh.draw().map_err(|x| e(x.to_string()))?;
        for &v in &p.vlines {
            if v >= x0 && v <= x1 {
                chart
                    .draw_series(LineSeries::new(
                        [(v, y0), (v, y1)],
                        RGBColor(235, 140, 140).stroke_width(1),
                    ))
                    .map_err(|x| e(x.to_string()))?;
            }
        }
        for s in &p.series {
            let color = s.color;
            match s.mark {
                Mark::Line => chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied().filter(|q| q.1.is_finite()),
                        color.stroke_width(2),
                    ))
                    .map_err(|x| e(x.to_string()))?,
                Mark::Dots => chart
                    .draw_series(
                        s.points
                            .iter()
                            .filter(|q| q.1.is_finite())
                            .map(|&q| Circle::new(q, 3, color.filled())),
                    )
                    .map_err(|x| e(x.to_string()))?,
            };
        }
    }
    root.present().map_err(|x| e(x.to_string()))
}

/// One heatmap: `values[i][j]` drawn at x = lo + i, y = lo + j (square for similarity
/// matrices, layers x heads for head effects), values mapped from `range`.
#[derive(Clone, Debug)]
pub struct Heatmap {
    /// Title.
    pub title: String,
    /// The first label.
    pub lo: i64,
    /// `n x m` values.
    pub values: Vec<Vec<f64>>,
    /// Value range mapped to the colour scale.
    pub range: (f64, f64),
}

/// Heatmaps in a grid of `cols` columns.
pub fn heatmaps(path: &Path, title: &str, maps: &[Heatmap], cols: usize, side: u32) -> Result<()> {
    let e = err(path);
    let cols = cols.clamp(1, maps.len().max(1));
    let rows = maps.len().div_ceil(cols).max(1);
    let root =
        BitMapBackend::new(path, (side * cols as u32, side * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|x| e(x.to_string()))?;
    for (area, m) in root.split_evenly((rows, cols)).iter().zip(maps) {
        let n = m.values.len() as i64;
        let ny = m.values.first().map_or(0, |r| r.len()) as i64;
        let mut chart = ChartBuilder::on(area)
            .caption(&m.title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(m.lo..m.lo + n, m.lo..m.lo + ny)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        let (lo, hi) = m.range;
        chart
            .draw_series(m.values.iter().enumerate().flat_map(|(i, row)| {
                row.iter().enumerate().map(move |(j, &v)| {
                    let t = ((v - lo) / (hi - lo).max(1e-12)).clamp(0.0, 1.0);
                    let c = ViridisRGB::get_color(t);
                    let (x, y) = (m.lo + i as i64, m.lo + j as i64);
                    Rectangle::new([(x, y), (x + 1, y + 1)], c.filled())
                })
            }))
            .map_err(|x| e(x.to_string()))?;
    }
    root.present().map_err(|x| e(x.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_number_axes_label_only_whole_ticks() {
        assert_eq!(whole_tick(0.0), "0");
        assert_eq!(whole_tick(27.0), "27");
        assert_eq!(whole_tick(-3.0), "-3");
        assert_eq!(whole_tick(0.4), "");
        assert_eq!(whole_tick(1.0 - 1e-12), "1");
        let layers = Panel {
            series: vec![Series {
                label: String::new(),
                points: (0..28).map(|l| (l as f64, 0.5)).collect(),
                mark: Mark::Line,
                color: palette(0),
            }],
            ..Default::default()
        };
        assert!(whole_x(&layers));
        let periods = Panel {
            series: vec![Series {
                points: vec![(2.5, 1.0), (10.0, 2.0)],
                ..layers.series[0].clone()
            }],
            ..Default::default()
        };
        assert!(!whole_x(&periods));
    }
}

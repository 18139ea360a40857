//! Heatmaps drawn as inline SVG in the page, for the figures people hover rather than read
//! (heads x layers): every cell carries its value in a tooltip (`<title>`), every layer and
//! head up to 32 has its tick label (beyond, every k-th), and the page needs nothing from the
//! network or a script to show them. The PNG beside each stays for printing.
//!
//! A key design decision is that there is no plotting library: an SVG `<rect>` per cell is
//! what such a library would emit for a heatmap, and writing it here keeps the report one
//! self-contained file that opens offline from the file system.

use std::fmt::Write as _;

use crate::escape;

/// A signed heatmap: `values[x][y]`, coloured blue (negative) to white (0) to red (positive).
pub struct SvgHeatmap<'a> {
    /// Heading above the map.
    pub title: &'a str,
    /// The x axis (e.g. "layer").
    pub x_label: &'a str,
    /// The y axis (e.g. "head").
    pub y_label: &'a str,
    /// `values[x][y]`.
    pub values: &'a [Vec<f64>],
    /// What a cell's tooltip says before its value (e.g. "L3H7").
    pub name: &'a dyn Fn(usize, usize) -> String,
    /// Tick labels of x and y (empty: the indices).
    pub ticks: (&'a [String], &'a [String]),
}

fn colour(v: f64, scale: f64) -> String {
    if !v.is_finite() {
        return "#cccccc".into();
    }
    let t = (v / scale).clamp(-1.0, 1.0);
    let fade = |c: f64| (255.0 - (255.0 - c) * t.abs()).round() as u8;
    let (r, g, b) = if t >= 0.0 {
        (fade(178.0), fade(24.0), fade(43.0))
    } else {
        (fade(33.0), fade(102.0), fade(172.0))
    };
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// Tick step so that labels do not collide: every one up to 32, then every k-th.
fn step(n: usize) -> usize {
    if n <= 32 {
        1
    } else {
        n.div_ceil(32)
    }
}

impl SvgHeatmap<'_> {
    /// The `<svg>` element.
    pub fn render(&self) -> String {
        let nx = self.values.len();
        let ny = self.values.iter().map(Vec::len).max().unwrap_or(0);
        let cell = (840 / nx.max(1)).clamp(4, 28) as i64;
        let label = |names: &[String], i: usize| names.get(i).cloned().unwrap_or(i.to_string());
        let widest = self
            .ticks
            .1
            .iter()
            .map(|t| t.len())
            .max()
            .unwrap_or(3)
            .max(3) as i64;
        let (left, top) = (28 + 7 * widest, 34i64);
        let (w, h) = (left + cell * nx as i64 + 90, top + cell * ny as i64 + 48);
        let scale = self
            .values
            .iter()
            .flatten()
            .filter(|v| v.is_finite())
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(1e-12);
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg class=\"heatmap\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" \
             height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\
             <text x=\"{left}\" y=\"16\" font-size=\"13\">{}</text>",
            escape(self.title)
        );
        for (x, col) in self.values.iter().enumerate() {
            for (y, &v) in col.iter().enumerate() {
                let _ = write!(
                    s,
                    "<rect x=\"{}\" y=\"{}\" width=\"{cell}\" height=\"{cell}\" fill=\"{}\">\
                     <title>{}: {v:.4}</title></rect>",
                    left + cell * x as i64,
                    top + cell * y as i64,
                    colour(v, scale),
                    escape(&(self.name)(x, y))
                );
            }
        }
        let bottom = top + cell * ny as i64;
        // Layer axes are marked so a browser check can find their ticks.
        let axis = if self.x_label == "layer" { "layer" } else { "" };
        for x in (0..nx).step_by(step(nx)) {
            let _ = write!(
                s,
                "<text class=\"xtick {axis}\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                left + cell * x as i64 + cell / 2,
                bottom + 14,
                escape(&label(self.ticks.0, x))
            );
        }
        for y in (0..ny).step_by(step(ny)) {
            let _ = write!(
                s,
                "<text class=\"ytick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                left - 4,
                top + cell * y as i64 + cell / 2 + 4,
                escape(&label(self.ticks.1, y))
            );
        }
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
             <text transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            left + cell * nx as i64 / 2,
            bottom + 32,
            escape(self.x_label),
            top + cell * ny as i64 / 2,
            escape(self.y_label)
        );
        // The colour key: -scale, 0, +scale.
        let kx = left + cell * nx as i64 + 16;
        for (i, v) in [scale, 0.0, -scale].iter().enumerate() {
            let y = top + 18 * i as i64;
            let _ = write!(
                s,
                "<rect x=\"{kx}\" y=\"{y}\" width=\"14\" height=\"14\" fill=\"{}\" \
                 stroke=\"#999\"/><text x=\"{}\" y=\"{}\">{v:.2}</text>",
                colour(*v, scale),
                kx + 18,
                y + 11
            );
        }
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_and_head_is_labelled_and_every_cell_has_its_value() {
        let values: Vec<Vec<f64>> = (0..28)
            .map(|l| (0..16).map(|h| (l * 16 + h) as f64 - 100.0).collect())
            .collect();
        let name = |l: usize, h: usize| format!("L{l}H{h}");
        let svg = SvgHeatmap {
            title: "heads <TE>",
            x_label: "layer",
            y_label: "head",
            values: &values,
            name: &name,
            ticks: (&[], &[]),
        }
        .render();
        assert_eq!(svg.matches("<rect").count(), 28 * 16 + 3);
        assert_eq!(svg.matches("class=\"xtick").count(), 28);
        assert_eq!(svg.matches("class=\"ytick\"").count(), 16);
        assert!(svg.contains(">27</text>") && svg.contains("L27H15: 347.0000"));
        assert!(svg.contains("heads &lt;TE&gt;"), "titles are escaped");
        // 448 heads in one row: ticks thin out to at most 32.
        let wide = vec![vec![1.0]; 448];
        let svg = SvgHeatmap {
            values: &wide,
            title: "",
            x_label: "",
            y_label: "",
            name: &name,
            ticks: (&[], &[]),
        }
        .render();
        assert!(svg.matches("class=\"xtick").count() <= 32);
    }

    #[test]
    fn colours_run_from_blue_through_white_to_red() {
        assert_eq!(colour(0.0, 1.0), "#ffffff");
        assert_eq!(colour(1.0, 1.0), "#b2182b");
        assert_eq!(colour(-2.0, 1.0), "#2166ac");
    }
}

//! Line charts drawn as inline SVG in the page, for curves over many kinds (every patch kind
//! over every layer): each point's tooltip names its series, layer and value, and clicking a
//! legend entry hides or shows its line, so twenty overlapping kinds can be read one at a time.
//! As [`crate::svg_heatmap`], no plotting library: the page stays one file that opens offline.

use std::fmt::Write as _;

use crate::charts::Series;
use crate::escape;

/// A line chart of `series` (x whole numbers, e.g. layers).
pub struct SvgLines<'a> {
    /// Heading.
    pub title: &'a str,
    /// x axis.
    pub x_label: &'a str,
    /// y axis.
    pub y_label: &'a str,
    /// The lines.
    pub series: &'a [Series],
}

/// The script that toggles a line when its legend entry is clicked (once per page is enough;
/// every chart carries it so a chart can be moved alone).
const TOGGLE: &str = "this.parentNode.querySelectorAll('[data-s=\"'+this.dataset.s+'\"]')\
.forEach(function(e){if(e!==this){e.style.display=e.style.display==='none'?'':'none'}},this);\
this.style.opacity=this.style.opacity==='0.4'?'1':'0.4'";

fn hex(c: plotters::style::RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

impl SvgLines<'_> {
    /// The `<svg>` element.
    pub fn render(&self) -> String {
        let pts = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|p| p.1.is_finite())
        };
        let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
        let (mut y0, mut y1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
        if !x0.is_finite() {
            return String::new();
        }
        if y1 - y0 < 1e-12 {
            (y0, y1) = (y0 - 0.5, y1 + 0.5);
        }
        let (left, top, pw, ph) = (64.0f64, 30.0f64, 620.0f64, 260.0f64);
        let legend_x = left + pw + 20.0;
        // The legend may be longer than the plot (thirty patch kinds): the chart grows for it.
        let (w, h) = (
            legend_x + 190.0,
            (top + ph + 50.0).max(top + 14.0 * self.series.len() as f64 + 10.0),
        );
        let sx = |x: f64| {
            left + if x1 > x0 {
                (x - x0) / (x1 - x0) * pw
            } else {
                pw / 2.0
            }
        };
        let sy = |y: f64| top + ph - (y - y0) / (y1 - y0) * ph;
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg class=\"lines\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\
             <text x=\"{left}\" y=\"16\" font-size=\"13\">{}</text>\
             <rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>",
            escape(self.title)
        );
        // x ticks at whole numbers (every layer up to 30, then every k-th); y at 5 levels.
        let span = (x1 - x0).round() as i64;
        let step = ((span + 1) as f64 / 30.0).ceil().max(1.0) as i64;
        let mut x = x0.round() as i64;
        while x as f64 <= x1 + 1e-9 {
            let _ = write!(
                s,
                "<text class=\"xtick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x}</text>",
                sx(x as f64),
                top + ph + 14.0
            );
            x += step;
        }
        for i in 0..=4 {
            let y = y0 + (y1 - y0) * i as f64 / 4.0;
            let _ = write!(
                s,
                "<line x1=\"{left}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y:.2}</text>",
                left + pw,
                left - 4.0,
                sy(y) + 4.0,
                py = sy(y)
            );
        }
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
             <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            left + pw / 2.0,
            top + ph + 34.0,
            escape(self.x_label),
            top + ph / 2.0,
            escape(self.y_label)
        );
        for (k, series) in self.series.iter().enumerate() {
            let colour = hex(series.color);
            let finite: Vec<&(f64, f64)> =
                series.points.iter().filter(|p| p.1.is_finite()).collect();
            let line: Vec<String> = finite
                .iter()
                .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
                .collect();
            let _ = write!(
                s,
                "<g data-s=\"{k}\"><polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" \
                 points=\"{}\"/>",
                line.join(" ")
            );
            for p in finite {
                let _ = write!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{} at {}: \
                     {:.4}</title></circle>",
                    sx(p.0),
                    sy(p.1),
                    escape(&series.label),
                    p.0,
                    p.1
                );
            }
            let ly = top + 14.0 * k as f64;
            let _ = write!(
                s,
                "</g><g data-s=\"{k}\" style=\"cursor:pointer\" onclick=\"{}\"><rect x=\"{legend_x}\" \
                 y=\"{:.1}\" width=\"12\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"{:.1}\">{}\
                 </text></g>",
                escape(TOGGLE),
                ly,
                legend_x + 16.0,
                ly + 9.0,
                escape(&series.label)
            );
        }
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sections::line;

    #[test]
    fn every_point_has_a_tooltip_and_every_layer_a_tick() {
        let series: Vec<Series> = (0..3)
            .map(|k| {
                line(
                    &format!("kind <{k}>"),
                    k,
                    (0..28).map(|l| (l as f64, (l * k) as f64)).collect(),
                )
            })
            .collect();
        let svg = SvgLines {
            title: "t",
            x_label: "layer",
            y_label: "logit difference",
            series: &series,
        }
        .render();
        assert_eq!(svg.matches("<circle").count(), 3 * 28);
        assert_eq!(svg.matches("class=\"xtick\"").count(), 28);
        assert!(svg.contains(">27</text>") && svg.contains("kind &lt;2&gt; at 27: 54.0000"));
        assert_eq!(svg.matches("onclick=").count(), 3);
    }
}

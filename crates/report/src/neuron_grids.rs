//! The top neurons' preactivation grids as interactive figures (paper Figs 8, 31): for each
//! shown neuron a canvas of its preactivation over (a, b) beside one of its fit, drawn by a
//! short script of the report's own, with the values under the pointer (a, b, preactivation,
//! fit) read out as one moves over a cell. The PNG (`neuron_preactivations.png`) stays for
//! printing.
//!
//! A key design decision is that the grids travel as data attributes, not as SVG: 10,000
//! `<rect>`s per grid would make a page of many megabytes, while a grid quantized to 16 bits
//! (a step of range / 65,535, far below any difference a reader can see) is 27 KB of base64.
//! The attributes hold only base64, numbers and escaped names, so no text of a study can
//! become script; the script itself is a constant of this file.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::escape;

/// Draws every `figure.ngrid` when the page is parsed, and reads out the cell under the
/// pointer. Sets `data-drawn` on each canvas to the number of cells it coloured, which the
/// page's self-check reports (`grids`, `grid_cells`).
pub const GRID_SCRIPT: &str = "<script>(function(){\
function dec(s){var b=atob(s),v=new Uint16Array(b.length/2);for(var i=0;i<v.length;i++)v[i]=b.charCodeAt(2*i)|(b.charCodeAt(2*i+1)<<8);return v}\
function col(t){t=Math.max(-1,Math.min(1,t));var f=function(c){return Math.round(255-(255-c)*Math.abs(t))};\
return t>=0?[f(178),f(24),f(43)]:[f(33),f(102),f(172)]}\
document.querySelectorAll('figure.ngrid').forEach(function(g){\
var d=g.dataset,na=+d.na,nb=+d.nb,lo=+d.lo,hi=+d.hi,sc=Math.max(Math.abs(lo),Math.abs(hi))||1,\
q=function(u){return lo+(hi-lo)*u/65535},vals={real:dec(d.real),fit:dec(d.fit)},out=g.querySelector('output');\
g.querySelectorAll('canvas').forEach(function(c){var v=vals[c.dataset.which],x=c.getContext('2d'),\
img=x.createImageData(na,nb),n=0;for(var i=0;i<na;i++)for(var j=0;j<nb;j++){var k=i*nb+j,p=4*((nb-1-j)*na+i),\
rgb=col(q(v[k])/sc);img.data[p]=rgb[0];img.data[p+1]=rgb[1];img.data[p+2]=rgb[2];img.data[p+3]=255;n++}\
var t=document.createElement('canvas');t.width=na;t.height=nb;t.getContext('2d').putImageData(img,0,0);\
x.imageSmoothingEnabled=false;x.drawImage(t,0,0,c.width,c.height);c.setAttribute('data-drawn',n);\
c.addEventListener('mousemove',function(e){var r=c.getBoundingClientRect(),\
i=Math.floor((e.clientX-r.left)/r.width*na),j=nb-1-Math.floor((e.clientY-r.top)/r.height*nb);\
if(i<0||j<0||i>=na||j>=nb)return;var k=i*nb+j;\
out.textContent='a = '+(+d.amin+i)+', b = '+(+d.bmin+j)+': preactivation '+q(vals.real[k]).toFixed(4)+', fit '+q(vals.fit[k]).toFixed(4)})})})})();</script>\n";

/// One neuron's grids, `values[i * n_b + j]` at a = a_min + i, b = b_min + j.
pub struct NeuronGrid<'a> {
    /// What the figure is called (e.g. "#1 L1N371, NRMSE 0.083").
    pub title: String,
    /// Cells along a and along b.
    pub n: (usize, usize),
    /// The first a and b.
    pub min: (i64, i64),
    /// The preactivations.
    pub real: &'a [f32],
    /// The fit's values.
    pub fit: &'a [f32],
}

/// `values` on 16 bits between `lo` and `hi` (non-finite values as `lo`), little-endian, in
/// base64.
fn quantized(values: &[f32], lo: f64, hi: f64) -> String {
    let span = (hi - lo).max(1e-12);
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|&v| {
            let v = v as f64;
            let u = if v.is_finite() {
                ((v - lo) / span * 65535.0).round().clamp(0.0, 65535.0) as u16
            } else {
                0
            };
            u.to_le_bytes()
        })
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl NeuronGrid<'_> {
    /// The `<figure>`: title, the two canvases (a to the right, b upwards) and the readout.
    pub fn render(&self) -> String {
        let finite = self
            .real
            .iter()
            .chain(self.fit)
            .map(|&v| v as f64)
            .filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
        let (na, nb) = self.n;
        let side = (2 * na.max(nb)).clamp(100, 300);
        let mut s = format!(
            "<figure class=\"ngrid\" data-na=\"{na}\" data-nb=\"{nb}\" data-amin=\"{}\" \
             data-bmin=\"{}\" data-lo=\"{lo}\" data-hi=\"{hi}\" data-real=\"{}\" data-fit=\"{}\" \
             style=\"display:inline-block;margin:0.5em\"><figcaption>{}</figcaption>",
            self.min.0,
            self.min.1,
            quantized(self.real, lo, hi),
            quantized(self.fit, lo, hi),
            escape(&self.title)
        );
        for (which, label) in [("real", "preactivation"), ("fit", "fit")] {
            let _ = write!(
                s,
                "<canvas data-which=\"{which}\" width=\"{side}\" height=\"{side}\" \
                 title=\"{label}; x: a, y: b\" style=\"margin-right:4px;border:1px solid #ccc\">\
                 </canvas>"
            );
        }
        s.push_str("<br><output>point at a cell</output></figure>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_the_16_bit_round_trip_to_a_step_of_the_range() {
        let v: Vec<f32> = vec![-2.0, 0.0, 1.5, f32::NAN, 3.0];
        let b = base64::engine::general_purpose::STANDARD
            .decode(quantized(&v, -2.0, 3.0))
            .unwrap();
        let back: Vec<f64> = b
            .chunks(2)
            .map(|c| -2.0 + 5.0 * u16::from_le_bytes([c[0], c[1]]) as f64 / 65535.0)
            .collect();
        for (x, y) in [(0, -2.0), (1, 0.0), (2, 1.5), (4, 3.0)] {
            assert!((back[x] - y).abs() <= 5.0 / 65535.0, "{x}: {}", back[x]);
        }
        assert_eq!(back[3], -2.0, "non-finite values read as the low end");
    }

    #[test]
    fn a_grid_carries_its_size_range_and_escaped_title() {
        let real = vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
        let html = NeuronGrid {
            title: "<b>L0N1</b>".into(),
            n: (2, 3),
            min: (0, 10),
            real: &real,
            fit: &real,
        }
        .render();
        assert!(html.contains("data-na=\"2\" data-nb=\"3\" data-amin=\"0\" data-bmin=\"10\""));
        assert!(html.contains("data-lo=\"0\" data-hi=\"5\""));
        assert!(html.contains("&lt;b&gt;L0N1&lt;/b&gt;") && !html.contains("<b>"));
        assert_eq!(html.matches("<canvas").count(), 2);
    }
}

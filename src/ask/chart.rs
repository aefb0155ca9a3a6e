//! A `metric` answer's series as a PNG, drawn in-process (plotters' bitmap backend, no fonts,
//! no system libraries). The picture carries no text: the title, the range and the figures are
//! in the message beside it, where they are searchable and redacted.

use super::answer::Chart;
use plotters::prelude::*;

pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 300;
const COLOURS: [RGBColor; 5] = [
    RGBColor(224, 30, 90),
    RGBColor(54, 197, 240),
    RGBColor(46, 184, 134),
    RGBColor(236, 178, 46),
    RGBColor(142, 68, 173),
];

/// The chart as PNG bytes; an error when there is nothing to draw.
pub fn png(chart: &Chart) -> Result<Vec<u8>, String> {
    let points = chart.series.iter().flat_map(|(_, p)| p.iter()).filter(|(_, v)| v.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (i64::MAX, i64::MIN, f64::MAX, f64::MIN);
    for (t, v) in points {
        (x0, x1, y0, y1) = (x0.min(*t), x1.max(*t), y0.min(*v), y1.max(*v));
    }
    if x0 > x1 {
        return Err("no samples to draw".into());
    }
    if x0 == x1 {
        x1 = x0 + 1;
    }
    let pad = if y1 > y0 { (y1 - y0) * 0.08 } else { y0.abs().max(1.0) * 0.1 };
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut c = ChartBuilder::on(&root).margin(12).build_cartesian_2d(x0..x1, y0..y1).map_err(|e| e.to_string())?;
        // Four faint horizontal guides, then each series.
        for k in 1..4 {
            let y = y0 + (y1 - y0) * k as f64 / 4.0;
            c.draw_series(LineSeries::new([(x0, y), (x1, y)], RGBColor(225, 225, 225))).map_err(|e| e.to_string())?;
        }
        for (i, (_, pts)) in chart.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let line = pts.iter().filter(|(_, v)| v.is_finite()).copied();
            c.draw_series(LineSeries::new(line, colour.stroke_width(2))).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| e.to_string())?;
    w.write_image_data(&rgb).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_and_refuses_nothing_to_draw() {
        let pts: Vec<(i64, f64)> = (0..60).map(|i| (i * 60_000, (i as f64 / 6.0).sin())).collect();
        let chart =
            Chart { title: "t".into(), series: vec![("a".into(), pts), ("b".into(), vec![(0, f64::NAN), (1, 2.0)])] };
        let bytes = png(&chart).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = ::png::Decoder::new(std::io::Cursor::new(&bytes));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        assert!(png(&Chart { title: "t".into(), series: vec![("a".into(), vec![])] }).is_err());
        let flat = Chart { title: "t".into(), series: vec![("a".into(), vec![(5, 1.0)])] };
        assert!(png(&flat).is_ok(), "one sample, a flat line");
    }
}

//! A `metric` answer's series as a PNG, drawn in-process (plotters' bitmap backend, no system
//! libraries, no system fonts: DejaVu Sans Mono is compiled in, `fonts/`, under its own free
//! licence). A person can read it without the message beside it: a title, a time axis in the
//! asker's timezone, a y-axis labelled in the series' unit and starting at zero for ratios and
//! counts (so a flat 0.4 % does not look like zero, nor a rise like a cliff), and the onset and
//! any change marked where they fall.

use super::answer::Chart;
use crate::runbook::Unit;
use crate::time::Millis;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 360;
const COLOURS: [RGBColor; 5] = [
    RGBColor(224, 30, 90),
    RGBColor(54, 197, 240),
    RGBColor(46, 184, 134),
    RGBColor(236, 178, 46),
    RGBColor(142, 68, 173),
];
/// The embedded font's family name.
const FONT: &str = "medic-mono";

/// Registers the embedded font once.
fn font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, include_bytes!("fonts/DejaVuSansMono.ttf"))
            .map_err(|_| "the embedded font does not load".to_string())
    })
    .clone()
}

/// The y range: the data's, padded; from zero for a ratio or a count that never goes below it.
pub fn y_range(values: impl Iterator<Item = f64>, unit: Unit) -> (f64, f64) {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let from_zero = matches!(unit, Unit::Ratio | Unit::Number) && lo >= 0.0;
    let lo = if from_zero { 0.0 } else { lo };
    let pad = if hi > lo { (hi - lo) * 0.08 } else { hi.abs().max(1.0) * 0.1 };
    (if from_zero { 0.0 } else { lo - pad }, hi + pad)
}

/// The chart as PNG bytes; an error when there is nothing to draw.
pub fn png(chart: &Chart) -> Result<Vec<u8>, String> {
    font()?;
    let points = chart.series.iter().flat_map(|(_, p)| p.iter()).filter(|(_, v)| v.is_finite());
    let (mut x0, mut x1) = (i64::MAX, i64::MIN);
    for (t, _) in points.clone() {
        (x0, x1) = (x0.min(*t), x1.max(*t));
    }
    if x0 > x1 {
        return Err("no samples to draw".into());
    }
    if x0 == x1 {
        x1 = x0 + 1;
    }
    let (y0, y1) = y_range(points.map(|p| p.1), chart.unit);
    let off = chart.offset as Millis * 1000;
    let clock = |t: &Millis| crate::time::from_millis(t + off).format("%H:%M").to_string();
    let value = |v: &f64| crate::diagnosis::format_value(*v, chart.unit);
    let zone = if chart.offset == 0 {
        "UTC".to_string()
    } else {
        format!("UTC{:+03}:{:02}", chart.offset / 3600, (chart.offset.abs() % 3600) / 60)
    };
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut c = ChartBuilder::on(&root)
            .margin(12)
            .caption(&chart.title, (FONT, 18))
            .x_label_area_size(34)
            .y_label_area_size(78)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_labels(7)
            .y_labels(5)
            .x_label_formatter(&clock)
            .y_label_formatter(&value)
            .x_desc(zone)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 12))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (_, pts)) in chart.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let line = pts.iter().filter(|(_, v)| v.is_finite()).copied();
            c.draw_series(LineSeries::new(line, colour.stroke_width(2))).map_err(|e| e.to_string())?;
        }
        // The onset and the changes, where they fall in the window: a line and its name.
        // Labels step down a line each, so two close marks do not write over each other.
        for (k, (t, label)) in chart.marks.iter().filter(|(t, _)| (x0..=x1).contains(t)).enumerate() {
            let grey = RGBColor(90, 90, 90);
            c.draw_series(LineSeries::new([(*t, y0), (*t, y1)], grey.stroke_width(1))).map_err(|e| e.to_string())?;
            let text: String = format!(" {}", label.chars().take(28).collect::<String>());
            let at = (*t, y1 - (y1 - y0) * 0.06 * k as f64);
            c.draw_series(std::iter::once(Text::new(text, at, (FONT, 11).into_font().color(&grey))))
                .map_err(|e| e.to_string())?;
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

    fn chart(series: Vec<(String, Vec<(i64, f64)>)>) -> Chart {
        Chart { title: "error_ratio of checkout".into(), series, unit: Unit::Ratio, offset: 0, marks: Vec::new() }
    }

    /// Rows of the picture with anything but white in them, between `from` and `to`.
    fn inked(bytes: &[u8], from: u32, to: u32) -> usize {
        let decoder = ::png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        let row = (WIDTH * 3) as usize;
        (from..to).filter(|y| buf[*y as usize * row..(*y as usize + 1) * row].iter().any(|b| *b < 200)).count()
    }

    #[test]
    fn draws_a_png_with_its_text_and_refuses_nothing_to_draw() {
        let pts: Vec<(i64, f64)> = (0..60).map(|i| (i * 60_000, 0.004 + 0.001 * (i as f64 / 6.0).sin())).collect();
        let mut c = chart(vec![("a".into(), pts), ("b".into(), vec![(0, f64::NAN), (60_000, 0.002)])]);
        c.marks = vec![(30 * 60_000, "onset".into())];
        let bytes = png(&c).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let decoder = ::png::Decoder::new(std::io::Cursor::new(&bytes));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        assert!(inked(&bytes, 0, 30) > 5, "the title is drawn at the top");
        assert!(inked(&bytes, HEIGHT - 40, HEIGHT) > 5, "the time axis' labels are drawn at the bottom");
        assert!(png(&chart(vec![("a".into(), vec![])])).is_err());
        assert!(png(&chart(vec![("a".into(), vec![(5, 1.0)])])).is_ok(), "one sample, a flat line");
    }

    #[test]
    fn ratios_and_counts_start_at_zero_and_other_units_at_their_data() {
        let flat = [0.004, 0.0041, 0.0039];
        assert_eq!(y_range(flat.into_iter(), Unit::Ratio).0, 0.0, "a flat 0.4 % is not drawn as zero");
        assert_eq!(y_range([3.0, 5.0].into_iter(), Unit::Number).0, 0.0);
        let (lo, hi) = y_range([0.2, 0.3].into_iter(), Unit::Seconds);
        assert!(lo > 0.1 && lo < 0.2 && hi > 0.3, "{lo} {hi}");
        assert!(y_range([-2.0, 1.0].into_iter(), Unit::Number).0 < -2.0, "below zero, the data's range");
    }
}

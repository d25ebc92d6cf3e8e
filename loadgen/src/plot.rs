//! The sweep's PNG: server CPU and audio latency against peers.

use std::path::Path;

use plotters::prelude::*;

use super::row::SweepRow;

/// A system TrueType font for the labels (plotters draws text with ab_glyph).
const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Draws two panels (server CPU %; latency p50/p99 ms) over the peers of `rows`.
///
/// # Errors
/// No usable font, or the PNG cannot be drawn or written.
pub fn plot(path: &Path, label: &str, rows: &[SweepRow]) -> Result<(), Box<dyn std::error::Error>> {
    register_font()?;
    let root = BitMapBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let max_peers = rows.iter().map(|r| r.peers).max().unwrap_or(1) as f64 * 1.05;

    let mut cpu = ChartBuilder::on(&top)
        .caption(
            format!("{label}: server CPU (one core)"),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max_peers, 0f64..110f64)?;
    cpu.configure_mesh()
        .x_desc("peers")
        .y_desc("CPU %")
        .draw()?;
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.peers as f64, r.server_cpu_pct))
        .collect();
    cpu.draw_series(LineSeries::new(points.clone(), &BLUE))?
        .label("server CPU %")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    cpu.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    let loss: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.peers as f64, r.loss_pct * 10.0))
        .collect();
    cpu.draw_series(LineSeries::new(loss, &RED))?
        .label("loss % x10")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    cpu.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;

    let max_latency = rows.iter().map(|r| r.latency_p99_ms).fold(60.0, f64::max) * 1.1;
    let mut latency = ChartBuilder::on(&bottom)
        .caption("server-added audio latency", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max_peers, 0f64..max_latency)?;
    latency
        .configure_mesh()
        .x_desc("peers")
        .y_desc("ms")
        .draw()?;
    for (name, color, pick) in [
        (
            "p50",
            GREEN,
            (|r: &SweepRow| r.latency_p50_ms) as fn(&SweepRow) -> f64,
        ),
        ("p99", MAGENTA, |r: &SweepRow| r.latency_p99_ms),
    ] {
        let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.peers as f64, pick(r))).collect();
        latency.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        latency
            .draw_series(LineSeries::new(points, &color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    latency
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}

fn register_font() -> Result<(), Box<dyn std::error::Error>> {
    let bytes = FONTS
        .iter()
        .find_map(|path| std::fs::read(path).ok())
        .ok_or("no TrueType font found (install fonts-dejavu-core)")?;
    // plotters keeps fonts for the process' lifetime; one leaked copy per process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "the font did not parse")?;
    Ok(())
}

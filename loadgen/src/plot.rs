//! The sweep's PNG: server CPU and audio latency against peers.

use std::path::Path;

use plotters::prelude::*;

use super::row::SweepRow;

/// A system TrueType font for the labels (plotters draws text with ab_glyph).
const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Draws two panels (server CPU %; latency p50/p99 ms) over the forwarded streams of `rows`.
///
/// # Errors
/// No usable font, or the PNG cannot be drawn or written.
pub fn plot(path: &Path, label: &str, rows: &[SweepRow]) -> Result<(), Box<dyn std::error::Error>> {
    register_font()?;
    let root = BitMapBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let x_label = "forwarded streams (echo: one per peer)";
    let max_peers = rows.iter().map(|r| r.streams).max().unwrap_or(1) as f64 * 1.05;

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
        .x_desc(x_label)
        .y_desc("CPU %")
        .draw()?;
    let points: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.streams as f64, r.server_cpu_pct))
        .collect();
    cpu.draw_series(LineSeries::new(points.clone(), &BLUE))?
        .label("server CPU %")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    cpu.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    let loss: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.streams as f64, r.loss_pct * 10.0))
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
        .caption(
            "audio latency (echo: server-added; rooms: send to receive)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max_peers, 0f64..max_latency)?;
    latency
        .configure_mesh()
        .x_desc(x_label)
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
        let points: Vec<(f64, f64)> = rows.iter().map(|r| (r.streams as f64, pick(r))).collect();
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

/// The rooms comparison: server CPU per 1,000 forwarded streams and latency p99 over the
/// forwarded streams, one line per sweep (`series`: label, rows; ours drawn with circles,
/// labels containing "janus" with triangles, a colour per room size `-pN`).
///
/// # Errors
/// No usable font, or the PNG cannot be drawn or written.
pub fn plot_rooms(
    path: &Path,
    series: &[(String, Vec<SweepRow>)],
) -> Result<(), Box<dyn std::error::Error>> {
    register_font()?;
    let root = BitMapBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    let rows = || series.iter().flat_map(|(_, rows)| rows.iter());
    let max_x = rows().map(|r| r.streams).max().unwrap_or(1) as f64 * 1.05;
    let max_cpu = rows()
        .map(SweepRow::cpu_per_1k_streams)
        .fold(10.0, f64::max)
        * 1.1;
    let max_p99 = rows().map(|r| r.latency_p99_ms).fold(60.0, f64::max) * 1.1;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (area, caption, y_desc, max_y, pick) in [
        (
            &top,
            "rooms: server CPU per 1,000 forwarded streams (one core; circles ours, triangles Janus)",
            "CPU % / 1k streams",
            max_cpu,
            SweepRow::cpu_per_1k_streams as fn(&SweepRow) -> f64,
        ),
        (
            &bottom,
            "rooms: latency p99, send to receive (limit 60 ms)",
            "ms",
            max_p99,
            |r: &SweepRow| r.latency_p99_ms,
        ),
    ] {
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..max_x, 0f64..max_y)?;
        chart
            .configure_mesh()
            .x_desc("forwarded streams")
            .y_desc(y_desc)
            .draw()?;
        for (i, (label, rows)) in series.iter().enumerate() {
            // One colour per room size, whichever server: the same P compares at a glance.
            let color = match label.rsplit('-').next() {
                Some("p2") => BLUE,
                Some("p5") => RED,
                Some("p10") => GREEN,
                _ => colors[i % colors.len()],
            };
            let points: Vec<(f64, f64)> =
                rows.iter().map(|r| (r.streams as f64, pick(r))).collect();
            if label.contains("janus") {
                chart.draw_series(
                    points
                        .iter()
                        .map(|&p| TriangleMarker::new(p, 5, color.filled())),
                )?;
            } else {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
            chart
                .draw_series(LineSeries::new(points, &color))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
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

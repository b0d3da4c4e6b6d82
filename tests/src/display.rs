//! A private X server for tests of the real window, and screenshots of it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// An `Xvfb` server on a free display number, killed when dropped.
pub struct Xvfb {
    child: Child,
    /// `:N`, for the `DISPLAY` variable.
    pub display: String,
}

impl Xvfb {
    /// Starts Xvfb (installed by `scripts/test.sh`) with one 24-bit screen of `width`×`height`.
    pub fn start(width: u32, height: u32) -> anyhow::Result<Xvfb> {
        let number = (90..200)
            .find(|n| {
                !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                    && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
            })
            .context("no free X display number")?;
        let display = format!(":{number}");
        let child = Command::new("Xvfb")
            .args([display.as_str(), "-screen", "0", &format!("{width}x{height}x24"), "-nolisten", "tcp"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start Xvfb: install xvfb (scripts/test.sh does)")?;
        let mut server = Xvfb { child, display };
        let socket = format!("/tmp/.X11-unix/X{number}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(&socket).exists() {
            if let Some(status) = server.child.try_wait()? {
                bail!("Xvfb exited at start: {status}");
            }
            if Instant::now() > deadline {
                bail!("Xvfb did not open {socket} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// The whole screen, as 8-bit RGB rows.
    pub fn screenshot(&self) -> anyhow::Result<Screenshot> {
        let output = Command::new("xwd")
            .args(["-root", "-silent", "-display", &self.display])
            .output()
            .context("cannot run xwd: install x11-apps (scripts/test.sh does)")?;
        if !output.status.success() {
            bail!("xwd failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Screenshot::from_xwd(&output.stdout)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An RGB image of the screen.
pub struct Screenshot {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Screenshot {
    /// Parses an X window dump (XWD version 7, ZPixmap, 24 or 32 bits per pixel).
    pub fn from_xwd(bytes: &[u8]) -> anyhow::Result<Screenshot> {
        let field = |index: usize| -> anyhow::Result<u32> {
            let at = index * 4;
            let raw = bytes.get(at..at + 4).context("XWD header is cut short")?;
            Ok(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
        };
        let (header_size, version, format) = (field(0)? as usize, field(1)?, field(2)?);
        if version != 7 || format != 2 {
            bail!("unsupported XWD: version {version}, format {format}");
        }
        let (width, height) = (field(4)?, field(5)?);
        let (byte_order, bits_per_pixel, bytes_per_line) = (field(7)?, field(11)?, field(12)? as usize);
        let (red_mask, green_mask, blue_mask) = (field(14)?, field(15)?, field(16)?);
        let colours = field(19)? as usize;
        if bits_per_pixel != 32 && bits_per_pixel != 24 {
            bail!("unsupported XWD pixel size {bits_per_pixel}");
        }
        let data = bytes.get(header_size + colours * 12..).context("XWD colour map is cut short")?;
        let pixel_bytes = bits_per_pixel as usize / 8;
        let channel = |pixel: u32, mask: u32| ((pixel & mask) >> mask.trailing_zeros()) as u8;
        let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height as usize {
            let row = data
                .get(y * bytes_per_line..y * bytes_per_line + width as usize * pixel_bytes)
                .context("XWD image is cut short")?;
            for raw in row.chunks(pixel_bytes) {
                let mut word = [0u8; 4];
                word[..pixel_bytes].copy_from_slice(raw);
                let pixel = if byte_order == 0 {
                    u32::from_le_bytes(word)
                } else {
                    u32::from_be_bytes(word) >> (32 - bits_per_pixel)
                };
                rgb.extend_from_slice(&[
                    channel(pixel, red_mask),
                    channel(pixel, green_mask),
                    channel(pixel, blue_mask),
                ]);
            }
        }
        Ok(Screenshot { width, height, rgb })
    }

    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let at = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[at], self.rgb[at + 1], self.rgb[at + 2]]
    }

    /// Writes a binary PPM, which image viewers and `convert` read.
    pub fn write_ppm(&self, path: &Path) -> anyhow::Result<()> {
        let mut out = format!("P6\n{} {}\n255\n", self.width, self.height).into_bytes();
        out.extend_from_slice(&self.rgb);
        std::fs::write(path, out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_screenshot_of_an_empty_screen_has_its_size() {
        let xvfb = Xvfb::start(320, 200).expect("Xvfb (scripts/test.sh installs it)");
        let shot = xvfb.screenshot().unwrap();
        assert_eq!((shot.width, shot.height), (320, 200));
        assert_eq!(shot.rgb.len(), 320 * 200 * 3);
    }
}

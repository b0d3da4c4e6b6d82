//! Bots and a relay as separate processes on loopback: what one says, the other hears.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chinwag_e2e::audio::{PulseServer, rms, speech_report, speech_wav, tone_amplitude};
use common::{
    BOT, assert_pattern_bars, finish, peer, relay, spawn_bot, stats, temp_dir, wait_for_participants,
};

#[test]
fn speech_arrives_intact_and_the_reported_delay_matches_the_recording() {
    let dir = temp_dir("speech");
    let speech =
        speech_wav(&dir, "The quick brown fox jumps over the lazy dog. Every call should sound this clear.")
            .unwrap();
    let relay = relay(&[]);
    let (record, b_json, a_json) = (dir.join("rec"), dir.join("b.json"), dir.join("a.json"));
    let listener = spawn_bot(
        &relay.url,
        "Listener",
        &[
            "--record",
            record.to_str().unwrap(),
            "--duration",
            "10",
            "--stats-json",
            b_json.to_str().unwrap(),
            // This checks the path keeps speech intact, not the host: on a shared machine a
            // 20-40 ms scheduling hiccup would cost a concealed frame at the 10 ms default,
            // and one such frame moves PESQ by 0.5 (benchmarks measure the default).
            "--jitter-min",
            "40",
        ],
        &[],
    );
    wait_for_participants(&relay, 1);
    let speaker = spawn_bot(
        &relay.url,
        "Speaker",
        &[
            "--send-audio",
            speech.to_str().unwrap(),
            "--duration",
            "8",
            "--stats-json",
            a_json.to_str().unwrap(),
        ],
        &[],
    );
    assert!(finish(speaker).status.success());
    assert!(finish(listener).status.success());

    let sent = chinwag_capture::read_wav_48k_mono(&speech).unwrap();
    let recorded = chinwag_capture::read_wav_48k_mono(&record.join("Speaker.wav")).unwrap();
    assert!(sent.len() > 48_000, "espeak-ng made {} samples", sent.len());
    let (speaker_stats, listener_stats) = (stats(&a_json), stats(&b_json));
    let report = speech_report(&sent, &recorded, &speaker_stats, &listener_stats, "Speaker").unwrap();
    eprintln!("{report:?}\nlistener: {}", peer(&listener_stats, "Speaker")["audio"]);
    assert!(report.correlation > 0.8, "the recording does not match what was sent: {report:?}");
    assert!(
        (report.measured_ms - report.reported_p50_ms).abs() <= 10.0,
        "mouth to ear: {:.1} ms from the recording, {:.1} ms reported",
        report.measured_ms,
        report.reported_p50_ms
    );
    assert!(report.reported_p50_ms < 200.0, "{report:?} on loopback");
    assert!(report.pesq_wb >= 3.5, "PESQ-WB {:.3}: the path degrades speech", report.pesq_wb);
    let audio = &peer(&listener_stats, "Speaker")["audio"];
    let sent_frames = speaker_stats["audio_frames_sent"].as_u64().unwrap();
    assert!(sent_frames >= 350, "about 7 s of 20 ms frames were sent: {speaker_stats}");
    assert_eq!(audio["packets_received"].as_u64(), Some(sent_frames), "every frame sent arrived: {audio}");
    assert_eq!(audio["packets_lost"].as_u64(), Some(0), "{audio}");
    assert!(listener_stats["rtt_ms"]["p50"].as_f64().unwrap() < 50.0);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The speaker sends video as well as a tone, so it has told the room its camera is on: the
/// state it repeats after rejoining once deadlocked its connection, and the call went silent
/// while the bot hung past its `--duration`.
#[test]
fn bots_rejoin_a_restarted_relay_audio_and_video_flow_again_and_both_exit_on_time() {
    let dir = temp_dir("restart");
    let first = relay(&[]);
    let addr = first.addr.to_string();
    let (record, b_json) = (dir.join("rec"), dir.join("b.json"));
    let started = Instant::now();
    let listener = spawn_bot(
        &addr,
        "Listener",
        &["--record", record.to_str().unwrap(), "--duration", "12", "--stats-json", b_json.to_str().unwrap()],
        &[],
    );
    wait_for_participants(&first, 1);
    let video = ["--send-video", "pattern", "--video-size", "320x240", "--video-fps", "10"];
    let speaker = spawn_bot(
        &addr,
        "Tone",
        &[&["--send-audio", "tone:440", "--duration", "11"][..], &video].concat(),
        &[],
    );
    wait_for_participants(&first, 2);
    std::thread::sleep(Duration::from_secs(2));
    drop(first);
    std::thread::sleep(Duration::from_millis(500));
    let restarted_unix_us = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as f64;
    let _second = relay(&["--listen", &addr]);
    let speaker_out = finish(speaker);
    let listener_out = finish(listener);
    let both_done = started.elapsed();
    assert!(speaker_out.status.success() && listener_out.status.success());
    assert!(String::from_utf8_lossy(&listener_out.stderr).contains("rejoined"));
    assert!(String::from_utf8_lossy(&speaker_out.stderr).contains("rejoined"));
    // 12 s of --duration, the wait for the first join, and at most the leave's grace.
    assert!(both_done < Duration::from_secs(16), "the bots exited {both_done:?} after starting");

    let stats = stats(&b_json);
    let record_start = peer(&stats, "Tone")["audio"]["record_start_unix_us"].as_f64().unwrap();
    let tones = stats["peers"].as_array().unwrap().iter().filter(|peer| peer["name"] == "Tone").count();
    assert!(tones >= 2, "the speaker appears once before and once after the restart: {stats}");
    let recorded = chinwag_capture::read_wav_48k_mono(&record.join("Tone.wav")).unwrap();
    // The first 100 ms window after the restart in which the tone is back.
    let restart_index = ((restarted_unix_us - record_start) / 1e6 * 48_000.0).max(0.0) as usize;
    let back = recorded[restart_index.min(recorded.len())..]
        .chunks(4800)
        .position(|window| tone_amplitude(window, 440.0, 48_000) > 0.2)
        .expect("the tone came back after the restart");
    let seconds = back as f64 * 0.1;
    eprintln!("audio flowed again {seconds:.1} s after the relay restarted");
    assert!(seconds < 5.0, "audio took {seconds:.1} s to come back");
    assert!(
        rms(&recorded[..restart_index.min(recorded.len())]) > 0.1,
        "the tone was there before the restart too"
    );
    // Video came back too: the speaker's entry after the rejoin received frames, and the last
    // one is the test pattern.
    let after = peer(&stats, "Tone");
    let frames_after = after["video"]["frames_received"].as_u64().unwrap();
    assert!(frames_after >= 20, "video after the restart: {after}");
    assert_pattern_bars(&std::fs::read(record.join("Tone.jpg")).unwrap(), "the last frame");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A bot whose relay never answers exits when its time is up, saying why.
#[test]
fn a_bot_exits_at_its_duration_whatever_the_relay_does() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and hold every connection, and never answer.
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(20));
        drop(held);
    });
    let started = Instant::now();
    let output = Command::new(BOT)
        .args(["--server", &addr.to_string(), "--room", "r", "--name", "Patient", "--duration", "2"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(took < Duration::from_secs(5), "exited {took:?} after starting: {stderr}");
    assert!(!output.status.success(), "never joined, so not a success: {stderr}");
    assert!(stderr.contains("did not answer"), "{stderr}");
}

#[test]
fn bots_that_cannot_join_exit_with_a_one_line_reason() {
    let relay = relay(&["--max-participants", "2"]);
    let owner = spawn_bot(&relay.url, "Owner", &["--password", "pw", "--duration", "8"], &[]);
    wait_for_participants(&relay, 1);
    let failures = [
        (
            vec!["--server", relay.url.as_str(), "--room", "r", "--name", "Eve", "--password", "nope"],
            "password",
        ),
        (
            vec!["--server", "127.0.0.1:1", "--room", "r", "--name", "Lost"],
            "cannot reach relay at ws://127.0.0.1:1/v1",
        ),
        (vec!["--server", "ftp://example", "--room", "r", "--name", "Odd"], "ws://"),
        (
            vec![
                "--server",
                relay.url.as_str(),
                "--room",
                "r",
                "--name",
                "Nobody",
                "--send-audio",
                "/missing.wav",
            ],
            "missing.wav",
        ),
    ];
    for (args, says) in failures {
        let started = Instant::now();
        let output = Command::new(BOT).args(&args).args(["--duration", "5"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(4), "{args:?} took {:?} to fail", started.elapsed());
    }
    let guest = spawn_bot(&relay.url, "Guest", &["--password", "pw", "--duration", "6"], &[]);
    wait_for_participants(&relay, 2);
    let output = Command::new(BOT)
        .args([
            "--server",
            &relay.url,
            "--room",
            "r",
            "--name",
            "Third",
            "--password",
            "pw",
            "--duration",
            "5",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("full"), "{stderr}");
    for bot in [owner, guest] {
        assert!(finish(bot).status.success());
    }
}

/// The real cpal path: a private PulseAudio server whose null sink's monitor is the default
/// microphone, so that whatever a bot plays to its speaker, its microphone hears at once (a
/// perfectly loud room). The "Devices" bot plays the tone bot's audio to the default output
/// and sends what the default input captures; returns how loud the tone came back, in dB
/// relative to the tone as sent.
#[cfg(target_os = "linux")]
fn tone_back_through_devices(name: &str, device_flags: &[&str]) -> f64 {
    let dir = temp_dir(name);
    let pulse = PulseServer::start(&dir.join("pulse"))
        .expect("a private PulseAudio server (scripts/test.sh installs it)");
    let relay = relay(&[]);
    let record = dir.join("rec");
    let mut flags = vec!["--input", "default", "--output", "default", "--duration", "8"];
    flags.extend_from_slice(device_flags);
    let device_bot = spawn_bot(&relay.url, "Devices", &flags, &pulse.env());
    wait_for_participants(&relay, 1);
    let tone_bot = spawn_bot(
        &relay.url,
        "Tone",
        &["--send-audio", "tone:440", "--record", record.to_str().unwrap(), "--duration", "7"],
        &[],
    );
    let tone_out = finish(tone_bot);
    let device_out = finish(device_bot);
    assert!(tone_out.status.success() && device_out.status.success());
    let stderr = String::from_utf8_lossy(&device_out.stderr);
    assert!(
        !stderr.contains("going on with silence") && !stderr.contains("going on with no sound"),
        "{stderr}"
    );
    // Through ALSA's PulseAudio plugin every underrun and the plugin's transient I/O errors
    // reach cpal's error callback: they are counted, and the device is never reopened for
    // them (each reopen was a gap, and a notice to the person).
    let device_lines: Vec<&str> = stderr.lines().filter(|line| line.contains("device")).collect();
    assert!(device_lines.is_empty(), "device trouble was told: {device_lines:#?}");
    let heard = chinwag_capture::read_wav_48k_mono(&record.join("Devices.wav")).unwrap();
    // The last third: the echo canceller has had 4 s or more to converge.
    let settled = &heard[heard.len() * 2 / 3..heard.len() * 9 / 10];
    let level = tone_amplitude(settled, 440.0, 48_000);
    std::fs::remove_dir_all(dir).unwrap();
    20.0 * f64::from(level.max(1e-6) / 0.5).log10()
}

#[test]
#[cfg(target_os = "linux")]
fn without_echo_cancellation_the_speaker_comes_back_through_the_microphone() {
    let db = tone_back_through_devices("devices-raw", &["--no-aec", "--no-ns", "--no-agc"]);
    eprintln!("tone back through speaker and microphone, processing off: {db:.1} dB");
    assert!(db > -10.0, "the real devices carried the tone: {db:.1} dB");
}

#[test]
#[cfg(target_os = "linux")]
fn echo_cancellation_keeps_the_speaker_out_of_the_microphone() {
    // Noise suppression would remove a steady tone by itself: switched off, so that this
    // measures the echo canceller alone.
    let db = tone_back_through_devices("devices-aec", &["--no-ns", "--no-agc"]);
    eprintln!("tone back through speaker and microphone, echo cancellation on: {db:.1} dB");
    assert!(db <= -25.0, "the echo came back at {db:.1} dB");
}

/// The threads audio passes through ask for real-time scheduling, so that a busy machine does
/// not starve them; video and everything else stay ordinary.
#[test]
#[cfg(target_os = "linux")]
fn the_audio_threads_run_at_real_time_priority() {
    let relay = relay(&[]);
    let bot = spawn_bot(
        &relay.url,
        "Prio",
        &["--send-audio", "tone:300", "--send-video", "pattern", "--duration", "4"],
        &[],
    );
    wait_for_participants(&relay, 1);
    std::thread::sleep(Duration::from_millis(800));
    // Thread name -> scheduling policy (field 41 of /proc/PID/task/TID/stat: 1 is SCHED_FIFO).
    let mut policies = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", bot.id())).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let policy: u32 = after_name.split_whitespace().nth(38).and_then(|p| p.parse().ok()).unwrap_or(99);
        policies.insert(comm.trim().to_owned(), policy);
    }
    assert!(finish(bot).status.success());
    let root = Command::new("id").arg("-u").output().map(|out| out.stdout == b"0\n").unwrap_or(false);
    if !root {
        eprintln!("not root: real-time scheduling is not expected here; threads: {policies:?}");
        return;
    }
    for audio_thread in ["chinwag-send", "chinwag-play", "chinwag-net"] {
        assert_eq!(policies.get(audio_thread), Some(&1), "{audio_thread} is not SCHED_FIFO: {policies:?}");
    }
    for other in ["chinwag-video", "chinwag-video-d"] {
        assert_eq!(policies.get(other), Some(&0), "{other} should stay ordinary: {policies:?}");
    }
}

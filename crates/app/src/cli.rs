//! The command line: flags first, then what the app should do with them.

use clap::Parser;

/// Chinwag: voice and video calls through a relay.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "chinwag", version, about)]
pub struct Args {
    /// The relay to dial: host[:port], ws://host[:port] or wss://host[:port].
    #[arg(long)]
    pub server: Option<String>,
    /// The room to join.
    #[arg(long)]
    pub room: Option<String>,
    /// The name others see.
    #[arg(long)]
    pub name: Option<String>,
    /// The room's password, if it has one.
    #[arg(long)]
    pub password: Option<String>,
    /// Join straight away with the values given (or remembered).
    #[arg(long)]
    pub join: bool,
    /// Start a demo call: a relay inside the app and a bot that sends a tone and a test pattern.
    #[arg(long, conflicts_with = "join")]
    pub demo: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let args =
            Args::parse_from(["chinwag", "--server", "wss://r:1", "--room", "a", "--name", "B", "--join"]);
        assert_eq!(args.server.as_deref(), Some("wss://r:1"));
        assert!(args.join && !args.demo);
        assert!(Args::try_parse_from(["chinwag", "--demo", "--join"]).is_err());
    }
}

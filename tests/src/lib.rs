//! End-to-end test helpers: start real relay processes and talk to them over real sockets.

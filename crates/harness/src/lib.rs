//! Starts real servers (nginx, vsftpd, sshd) on loopback for tests, benchmarks and the demo.

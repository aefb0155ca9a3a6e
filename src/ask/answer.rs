//! Answers (next).

//! Support for end-to-end tests: fixture repositories, the built binaries, the real services
//! that `ci/` starts. The tests themselves live in `tests/tests/`.

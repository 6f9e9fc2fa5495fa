//! The `chunkmill` binary: the command of the library of the same name.

fn main() {
    chunkmill::run_command(std::env::args_os().collect());
}

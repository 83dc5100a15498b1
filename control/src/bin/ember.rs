//! `ember`: the command-line client of ember-control (see [`control::cli`]).

fn main() -> std::process::ExitCode {
    control::cli::main()
}

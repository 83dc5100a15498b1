//! `ember`: the command-line client of ember-control (see [`ember_cli`]).

fn main() -> std::process::ExitCode {
    ember_cli::main()
}

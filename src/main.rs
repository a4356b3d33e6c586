//! The `scriptd` command line; everything it does is in the library ([`scriptd::tools`]).

fn main() -> std::process::ExitCode {
    scriptd::tools::run::main()
}

//! The `linen` CNI plugin binary: reads the `CNI_*` environment and the configuration on
//! stdin, prints the result (or the error object) on stdout, exits non-zero on error.
use std::io::{Read, Write};

fn main() {
    let env = linen_cni::config::Env::from_lookup(|k| std::env::var(k).ok());
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = linen_cni::error::CniError::new(
            linen_cni::error::Code::IoFailure,
            format!("cannot read the configuration from stdin: {e}"),
        );
        println!("{}", err.to_json("1.1.0"));
        std::process::exit(1);
    }
    let outcome = linen_cni::run(&env, &stdin);
    if let Some(out) = outcome.stdout {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{out}");
        let _ = stdout.flush();
    }
    std::process::exit(outcome.exit_code);
}

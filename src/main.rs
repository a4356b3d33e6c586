fn main() {
    println!("scriptd {}", env!("CARGO_PKG_VERSION"));
}

//! The mesh data plane stand-in for the end-to-end tests; see `serin_e2e::mesh::data_plane`.

fn main() {
    serin_e2e::mesh::data_plane::main();
}

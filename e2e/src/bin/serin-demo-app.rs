//! The app under rollout for the end-to-end tests; see `serin_e2e::mesh::demo_app`.

fn main() {
    serin_e2e::mesh::demo_app::main();
}

//! What the expression budget costs: the time of one small evaluation (`.a + 1`, metered, on
//! its own stack segment) beside the time of switching to a stack segment alone, measured in
//! the same run. `cargo run --release -p cairn-core --example evalcost`

use std::hint::black_box;
use std::time::Instant;

fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() / f64::from(n)
}

fn main() {
    let input = serde_json::json!({ "a": 1 });
    let vars = cairn_core::expr::Vars::new();
    let n = 20_000;
    let eval = || {
        black_box(cairn_core::expr::eval(".a + 1", &input, &vars).ok());
    };
    per_call(1_000, eval); // warm the compile cache
    let evaluated = per_call(n, eval);
    let segment = per_call(n, || {
        black_box(stacker::grow(cairn_core::budget::EVAL_STACK, || {
            black_box(1)
        }));
    });
    println!(
        "eval {:.2} us; stack segment alone {:.2} us = {:.0}% of it",
        evaluated * 1e6,
        segment * 1e6,
        segment / evaluated * 100.0
    );
}

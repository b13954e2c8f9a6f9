use sascribe_model::{Options, SaScribe, Setup};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let subs: usize = args[1].parse().unwrap();
    let pubs: usize = args[2].parse().unwrap();
    let m = SaScribe::new(
        Setup::new(&Options {
            subscribers: Some(subs),
            publishes: Some(pubs),
            ..Default::default()
        })
        .unwrap(),
    );
    for seed in 0..20000 {
        let w = m.random_walk(seed, 200);
        if w.len() > 45 {
            println!("seed {seed} len {}", w.len());
            for (i, (a, _)) in w.iter().enumerate() {
                println!("{:>3}. {}", i + 1, m.describe(a));
            }
            return;
        }
    }
}

//! Times one training step's parts (forward, backward, optimiser) for the adder-decimal recipe.
use std::time::Instant;

use candle_core::{Device, Tensor};
use helixlab_train::model::TinyGpt2;
use helixlab_train::Recipe;
use rand::SeedableRng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> candle_core::Result<()> {
    let r = Recipe::named("adder-decimal").unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let m = TinyGpt2::init(r.shape, &mut rng)?;
    let ids: Vec<u32> = (0..768 * 4).map(|i| (i * 7 % 200) as u32).collect();
    let ids = Tensor::from_vec(ids, (768, 4), &Device::Cpu)?;
    let tg = Tensor::from_vec(
        (0..768).map(|i| (i % 199) as u32).collect::<Vec<_>>(),
        768,
        &Device::Cpu,
    )?;
    for _ in 0..3 {
        let t0 = Instant::now();
        let logits = m.forward_last(&ids)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &tg)?;
        let t1 = Instant::now();
        let g = loss.backward()?;
        let t2 = Instant::now();
        println!(
            "forward {:.3}s backward {:.3}s ({} grads)",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            m.vars().iter().filter(|v| g.get(v).is_some()).count()
        );
    }
    Ok(())
}

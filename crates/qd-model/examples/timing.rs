use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() {
    let f = qd_gguf::GgufFile::open(std::env::args().nth(1).unwrap()).unwrap();
    let m = qd_model::load_quantized(&f, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (0..512u32).map(|i| 100 + i * 7).collect();
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        let out = m
            .forward(
                &x,
                None,
                &qd_model::ForwardOpts {
                    logits: qd_model::Logits::None,
                    hidden_states: false,
                },
            )
            .unwrap();
        eprintln!("body {:?}", t.elapsed());
        let t = Instant::now();
        let l = m.lm_head(&out.normed.narrow(1, 0, 64).unwrap()).unwrap();
        eprintln!("head64 {:?} {:?}", t.elapsed(), l.dims());
        let t = Instant::now();
        let e = m.embed_tokens(&x).unwrap();
        eprintln!("embed {:?} {:?}", t.elapsed(), e.dims());
    }
}

fn main() {
    let p = std::env::args().nth(1).unwrap();
    let f = qd_gguf::GgufFile::open(&p).unwrap();
    for (k, v) in f.metadata() {
        let s = match v {
            qd_gguf::Value::Array(t, a) => {
                format!("[{:?} x {}] {:?}", t, a.len(), &a[..a.len().min(8)])
            }
            v => format!("{v:?}"),
        };
        println!("{k} = {s}");
    }
    for t in f.tensors().iter().take(30) {
        println!("{} {:?} {}", t.name, t.dims, t.dtype);
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in f.tensors() {
        *counts.entry(t.dtype.name()).or_insert(0) += 1;
    }
    println!("{counts:?} n={}", f.tensors().len());
}

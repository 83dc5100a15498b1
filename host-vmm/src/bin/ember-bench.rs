use std::time::{Duration, Instant};
use host_vmm::{GuestClient, Vm, VmConfig};
fn main() {
    for _ in 0..5 { println!("floor {:?}", host_vmm::floor::kvm_floor().unwrap()); }
    for _ in 0..5 {
        let t = Instant::now();
        let vm = Vm::boot(&VmConfig::default()).unwrap();
        let a = t.elapsed();
        let mut c = GuestClient::connect(&vm, Duration::from_secs(5)).unwrap();
        let b = t.elapsed();
        c.ping().unwrap();
        let d = t.elapsed();
        let mut rtts = vec![];
        for _ in 0..200 { let t = Instant::now(); c.echo(&[0u8; 64]).unwrap(); rtts.push(t.elapsed()); }
        rtts.sort();
        drop(c);
        let t2 = Instant::now();
        drop(vm);
        println!("boot {a:?} connect {b:?} ping {d:?} echo p50 {:?} drop {:?}", rtts[100], t2.elapsed());
    }
}

fn main() {
    println!("{:?}", host_vmm::floor::kvm_floor());
}

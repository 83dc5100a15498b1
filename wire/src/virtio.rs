//! virtio constants both sides use (virtio 1.2: the MMIO transport, section 4.2.2, and the
//! socket device, section 5.10), so the guest's driver and the host's device name the same
//! registers and operations.

/// virtio-mmio register offsets.
pub mod mmio {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device-specific configuration space.
    pub const CONFIG: u64 = 0x100;

    /// "virt"
    pub const MAGIC: u32 = 0x7472_6976;
}

/// The vsock device: its id, packet operations and flags.
pub mod vsock {
    pub const DEVICE_ID: u32 = 19;
    pub const TYPE_STREAM: u16 = 1;
    pub const HEADER_LEN: usize = 44;

    pub const OP_REQUEST: u16 = 1;
    pub const OP_RESPONSE: u16 = 2;
    pub const OP_RST: u16 = 3;
    pub const OP_SHUTDOWN: u16 = 4;
    pub const OP_RW: u16 = 5;
    pub const OP_CREDIT_UPDATE: u16 = 6;
    pub const OP_CREDIT_REQUEST: u16 = 7;

    /// SHUTDOWN flags: the sender will receive / send no more.
    pub const SHUTDOWN_RCV: u32 = 1;
    pub const SHUTDOWN_SEND: u32 = 2;
}

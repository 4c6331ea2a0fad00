//! Payload limits that publishers, the broker and subscribers must all agree on.
//!
//! rumqttc's default maximum packet is 10 KiB, far below one second of samples, so every MQTT
//! client and the broker in DTOP set these explicitly.

/// Largest encoded `SampleBlock` the edge will publish and the twin will accept, bytes.
///
/// One second of 8 channels at 1 kHz is 8000 `sint32` varints of at most 5 bytes: 40 KB worst
/// case. 256 KiB leaves room for 6 s blocks or 48 channels.
pub const MAX_SAMPLE_BLOCK_BYTES: usize = 256 * 1024;

/// Largest MQTT packet any DTOP client or broker listener accepts, bytes: a full sample block
/// plus topic and MQTT headers.
pub const MAX_MQTT_PACKET_BYTES: usize = MAX_SAMPLE_BLOCK_BYTES + 4 * 1024;

/// Largest control-plane payload (`Command`, `CommandAck`, `ActuatorDrive`, `RigBirth`), bytes.
pub const MAX_CONTROL_BYTES: usize = 64 * 1024;

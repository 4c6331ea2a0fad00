//! The read planner: coalesces a device's registers, per table, into as few read requests as the
//! Modbus PDU limits allow. Pure; sending the requests is `bus.rs`'s job.

use crate::modbus::config::{DeviceConfig, MAX_READ_BITS, Table};

/// One read request of a poll cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: Table,
    /// First word (or bit) read.
    pub address: u16,
    /// Words (or bits) read.
    pub count: u16,
    /// Registers this request carries: (index into the device's `registers`, offset of its
    /// first word within the response).
    pub registers: Vec<(usize, u16)>,
}

/// The requests that read every register of `device` once, in (table, address) order.
///
/// A request grows while the next register starts at most `max_gap_registers` after the
/// current end and the whole span stays within `max_registers_per_read` (2000 bits for the bit
/// tables). A register never straddles two requests.
pub fn plan_reads(device: &DeviceConfig) -> Vec<ReadRequest> {
    let mut order: Vec<usize> = (0..device.registers.len()).collect();
    order.sort_by_key(|&i| (device.registers[i].table, device.registers[i].address));
    let gap = u32::from(device.max_gap_registers);
    let mut out: Vec<ReadRequest> = Vec::new();
    for i in order {
        let r = &device.registers[i];
        let (first, words) = (u32::from(r.address), u32::from(r.words()));
        let limit = u32::from(if r.table.is_bits() {
            MAX_READ_BITS
        } else {
            device.max_registers_per_read.max(1)
        });
        if let Some(req) = out.last_mut()
            && req.table == r.table
        {
            let start = u32::from(req.address);
            let end = start + u32::from(req.count); // one past the last word read
            let new_end = end.max(first + words);
            if first <= end + gap && new_end - start <= limit {
                // The spans fit u16: both ends are within one 65536-word table and the
                // difference is at most `limit`.
                req.count = (new_end - start) as u16;
                req.registers.push((i, (first - start) as u16));
                continue;
            }
        }
        out.push(ReadRequest {
            table: r.table,
            address: r.address,
            count: r.words(),
            registers: vec![(i, 0)],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::{DataType, RegisterConfig};

    fn reg(table: Table, address: u16, data_type: DataType) -> RegisterConfig {
        RegisterConfig {
            channel: format!("{table:?}{address}"),
            table,
            address,
            data_type: Some(data_type),
            word_order: Default::default(),
            byte_order: Default::default(),
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
            kind: Default::default(),
            floor: 0,
            resolution: None,
        }
    }

    fn device(registers: Vec<RegisterConfig>, max_gap: u16, max_per_read: u16) -> DeviceConfig {
        DeviceConfig {
            name: "d".into(),
            tcp: None,
            rtu: None,
            unit_id: 1,
            request_timeout_ms: 100,
            poll_period_ms: 100,
            max_registers_per_read: max_per_read,
            max_gap_registers: max_gap,
            registers,
        }
    }

    fn spans(plan: &[ReadRequest]) -> Vec<(Table, u16, u16)> {
        plan.iter().map(|r| (r.table, r.address, r.count)).collect()
    }

    #[test]
    fn joins_adjacent_registers_per_table_and_keeps_tables_apart() {
        use DataType::*;
        let d = device(
            vec![
                reg(Table::Input, 2, F32),
                reg(Table::Holding, 0, U16),
                reg(Table::Input, 0, F32),
                reg(Table::Input, 4, F64),
                reg(Table::Coil, 3, Bool),
                reg(Table::Coil, 4, Bool),
            ],
            0,
            125,
        );
        let plan = plan_reads(&d);
        assert_eq!(
            spans(&plan),
            [
                (Table::Holding, 0, 1),
                (Table::Input, 0, 8),
                (Table::Coil, 3, 2)
            ]
        );
        // Input registers in address order: index 2 at 0, 0 at 2, 3 at 4.
        assert_eq!(plan[1].registers, [(2, 0), (0, 2), (3, 4)]);
    }

    #[test]
    fn bridges_gaps_only_up_to_the_configured_size() {
        use DataType::*;
        let regs = vec![
            reg(Table::Holding, 0, U16),
            reg(Table::Holding, 4, U16),
            reg(Table::Holding, 20, U16),
        ];
        assert_eq!(
            spans(&plan_reads(&device(regs.clone(), 0, 125))),
            [
                (Table::Holding, 0, 1),
                (Table::Holding, 4, 1),
                (Table::Holding, 20, 1)
            ]
        );
        assert_eq!(
            spans(&plan_reads(&device(regs, 3, 125))),
            [(Table::Holding, 0, 5), (Table::Holding, 20, 1)]
        );
    }

    #[test]
    fn never_asks_for_more_than_125_registers_or_splits_a_value() {
        // 100 f32s back to back: 200 words, so two requests; the 63rd value would straddle 125.
        let regs: Vec<_> = (0..100)
            .map(|i| reg(Table::Input, i * 2, DataType::F32))
            .collect();
        let plan = plan_reads(&device(regs, 0, 125));
        assert_eq!(
            spans(&plan),
            [(Table::Input, 0, 124), (Table::Input, 124, 76)]
        );
        let small = plan_reads(&device(
            (0..10)
                .map(|i| reg(Table::Input, i, DataType::U16))
                .collect(),
            0,
            4,
        ));
        assert_eq!(
            spans(&small),
            [
                (Table::Input, 0, 4),
                (Table::Input, 4, 4),
                (Table::Input, 8, 2)
            ]
        );
    }

    #[test]
    fn bit_tables_take_up_to_2000_bits_per_read() {
        let regs: Vec<_> = (0..2001)
            .map(|i| reg(Table::Discrete, i, DataType::Bool))
            .collect();
        let plan = plan_reads(&device(regs, 0, 125));
        assert_eq!(
            spans(&plan),
            [(Table::Discrete, 0, 2000), (Table::Discrete, 2000, 1)]
        );
    }

    #[test]
    fn reads_up_to_the_top_of_the_address_space() {
        let d = device(
            vec![
                reg(Table::Holding, 65_532, DataType::F32),
                reg(Table::Holding, 65_534, DataType::U32),
            ],
            0,
            125,
        );
        assert_eq!(spans(&plan_reads(&d)), [(Table::Holding, 65_532, 4)]);
    }
}

//! Where occurrences come from. Today only MQTT ([`mqtt`]): the analytics server publishes
//! QoS 1 messages under `mqtt.events_topic`; the source hands each one over with an
//! [`mqtt::AckToken`] that the pipeline uses once the outcome is durable.

pub mod mqtt;

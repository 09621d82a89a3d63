"""The seat's thin client. `thin_client.receiver` is its WebRTC receiver (offer, decode, stamps, input)."""

package tracking

// WakePayloadForTest exposes a Store's wake payload to tests.
func WakePayloadForTest(s *Store, st Stage) string { return s.wakePayload(st) }

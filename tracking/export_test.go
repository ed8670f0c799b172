package tracking

// WakePayloadForTest exposes a Store's wake payload to tests.
func WakePayloadForTest(s *Store, st Stage) string { return s.wakePayload(st) }

// The queue's statements, for TestPlanShapes.
const (
	ClaimSQLForTest   = claimSQL
	SucceedSQLForTest = succeedSQL
	FailSQLForTest    = failSQL
	ExtendSQLForTest  = extendSQL
)

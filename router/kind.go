package router

// Kind is what a statement is, as far as routing cares.
type Kind int

// The zero Kind is KindOther: a statement the router does not know, which
// therefore goes to the primary.
const (
	KindOther  Kind = iota
	KindEmpty       // nothing but whitespace and comments
	KindMulti       // several statements; see Statement.Kinds
	KindSelect      // SELECT, VALUES, TABLE, WITH … SELECT
	KindShow
	KindExplain
	KindCopyTo
	KindCopyFrom
	KindInsert
	KindUpdate
	KindDelete
	KindMerge
	KindTruncate
	KindDDL // CREATE/ALTER/DROP…, GRANT/REVOKE, COMMENT, CREATE TABLE AS, SELECT … INTO
	KindBegin
	KindStartTransaction
	KindSetTransaction // SET TRANSACTION …, SET transaction_read_only/_isolation/_deferrable
	KindSetSessionCharacteristics
	KindCommit // COMMIT, END
	KindRollback
	KindSavepoint
	KindRelease
	KindRollbackTo
	KindPrepareTransaction
	KindCommitPrepared
	KindRollbackPrepared
	KindSet
	KindReset
	KindSetConstraints
	KindDiscard
	KindListen
	KindUnlisten
	KindNotify
	KindPrepare
	KindExecute
	KindDeallocate
	KindDeclare
	KindFetch // FETCH and MOVE
	KindClose
	KindLock
	KindMaintenance // VACUUM, ANALYZE, REINDEX, CLUSTER, CHECKPOINT, REFRESH MATERIALIZED VIEW
	KindCall
	KindDo
)

func (k Kind) String() string {
	switch k {
	case KindOther:
		return "Other"
	case KindEmpty:
		return "Empty"
	case KindMulti:
		return "Multi"
	case KindSelect:
		return "Select"
	case KindShow:
		return "Show"
	case KindExplain:
		return "Explain"
	case KindCopyTo:
		return "CopyTo"
	case KindCopyFrom:
		return "CopyFrom"
	case KindInsert:
		return "Insert"
	case KindUpdate:
		return "Update"
	case KindDelete:
		return "Delete"
	case KindMerge:
		return "Merge"
	case KindTruncate:
		return "Truncate"
	case KindDDL:
		return "DDL"
	case KindBegin:
		return "Begin"
	case KindStartTransaction:
		return "StartTransaction"
	case KindSetTransaction:
		return "SetTransaction"
	case KindSetSessionCharacteristics:
		return "SetSessionCharacteristics"
	case KindCommit:
		return "Commit"
	case KindRollback:
		return "Rollback"
	case KindSavepoint:
		return "Savepoint"
	case KindRelease:
		return "Release"
	case KindRollbackTo:
		return "RollbackTo"
	case KindPrepareTransaction:
		return "PrepareTransaction"
	case KindCommitPrepared:
		return "CommitPrepared"
	case KindRollbackPrepared:
		return "RollbackPrepared"
	case KindSet:
		return "Set"
	case KindReset:
		return "Reset"
	case KindSetConstraints:
		return "SetConstraints"
	case KindDiscard:
		return "Discard"
	case KindListen:
		return "Listen"
	case KindUnlisten:
		return "Unlisten"
	case KindNotify:
		return "Notify"
	case KindPrepare:
		return "Prepare"
	case KindExecute:
		return "Execute"
	case KindDeallocate:
		return "Deallocate"
	case KindDeclare:
		return "Declare"
	case KindFetch:
		return "Fetch"
	case KindClose:
		return "Close"
	case KindLock:
		return "Lock"
	case KindMaintenance:
		return "Maintenance"
	case KindCall:
		return "Call"
	case KindDo:
		return "Do"
	}
	return "Unknown"
}

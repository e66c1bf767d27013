000100*================================================================ COVERAGE
000200* COVERAGE  POLICY COVERAGE SEGMENTS (BASE PLAN AND RIDERS)       COVERAGE
000300*           RECFM=FB, LRECL=60, KEY POL-NUMBER + COV-SEQ          COVERAGE
000400*================================================================ COVERAGE
000500 01  COVERAGE-REC.                                                COVERAGE
000600     05  POL-NUMBER              PIC X(10).                       COVERAGE
000700     05  COV-SEQ                 PIC 9(03).                       COVERAGE
000800     05  COV-CODE                PIC X(06).                       COVERAGE
000900     05  COV-FACE                PIC S9(9)V99  COMP-3.            COVERAGE
001000     05  COV-PREMIUM             PIC S9(7)V99  COMP-3.            COVERAGE
001100     05  COV-EFF-DATE            PIC 9(08).                       COVERAGE
001200     05  COV-EXP-DATE            PIC 9(08).                       COVERAGE
001300     05  COV-STATUS              PIC X(02).                       COVERAGE
001400         88  COV-ACTIVE                    VALUE 'AC'.            COVERAGE
001500         88  COV-TERMINATED                VALUE 'TR'.            COVERAGE
001600     05  FILLER                  PIC X(12).                       COVERAGE

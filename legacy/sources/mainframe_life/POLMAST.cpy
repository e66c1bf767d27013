000100*================================================================ POLMAST
000200* POLMAST   LIFE AND ANNUITY POLICY MASTER RECORD                 POLMAST
000300*           VSAM KSDS EXTRACT, RECFM=VB, LRECL=352 (RDW + 348)    POLMAST
000400*           ONE RECORD PER POLICY, KEY POL-NUMBER                 POLMAST
000500*           RIDERS: 0 TO 5 OCCURRENCES, DEPENDING ON RIDER-COUNT  POLMAST
000600*================================================================ POLMAST
000700 01  POLMAST-REC.                                                 POLMAST
000800     05  POL-NUMBER              PIC X(10).                       POLMAST
000900     05  POL-STATUS              PIC X(02).                       POLMAST
001000         88  POL-IN-FORCE                  VALUE 'IF'.            POLMAST
001100         88  POL-PAID-UP                   VALUE 'PU'.            POLMAST
001200         88  POL-PENDING                   VALUE 'PE'.            POLMAST
001300         88  POL-TERMINATED                VALUE 'LA' 'SU' 'DC'.  POLMAST
001400     05  PLAN-CODE               PIC X(06).                       POLMAST
001500     05  CARRIER-CODE            PIC X(04).                       POLMAST
001600     05  ISSUE-DATE              PIC 9(08).                       POLMAST
001700     05  EFF-DATE                PIC 9(08).                       POLMAST
001800     05  MATURITY-DATE           PIC 9(08).                       POLMAST
001900     05  INSURED.                                                 POLMAST
002000         10  INS-LAST-NAME       PIC X(20).                       POLMAST
002100         10  INS-FIRST-NAME      PIC X(15).                       POLMAST
002200         10  INS-MIDDLE-INIT     PIC X(01).                       POLMAST
002300         10  INS-BIRTH-DATE      PIC 9(08).                       POLMAST
002400         10  INS-SEX             PIC X(01).                       POLMAST
002500             88  INS-MALE                  VALUE 'M'.             POLMAST
002600             88  INS-FEMALE                VALUE 'F'.             POLMAST
002700         10  INS-TAX-ID          PIC X(09).                       POLMAST
002800         10  INS-ADDRESS.                                         POLMAST
002900             15  INS-ADDR-LINE1  PIC X(30).                       POLMAST
003000             15  INS-CITY        PIC X(20).                       POLMAST
003100             15  INS-STATE       PIC X(02).                       POLMAST
003200             15  INS-ZIP         PIC X(05).                       POLMAST
003300             15  INS-ZIP4        PIC X(04).                       POLMAST
003400     05  AGENT-CODE              PIC X(06).                       POLMAST
003500     05  FACE-AMOUNT             PIC S9(9)V99  COMP-3.            POLMAST
003600     05  MODAL-PREMIUM           PIC S9(7)V99  COMP-3.            POLMAST
003700     05  BILLING-MODE            PIC X(01).                       POLMAST
003800         88  BILL-ANNUAL                   VALUE 'A'.             POLMAST
003900         88  BILL-SEMI-ANNUAL              VALUE 'S'.             POLMAST
004000         88  BILL-QUARTERLY                VALUE 'Q'.             POLMAST
004100         88  BILL-MONTHLY                  VALUE 'M'.             POLMAST
004200     05  CASH-VALUE              PIC S9(9)V99.                    POLMAST
004300     05  LOAN-BALANCE            PIC S9(7)V99  COMP-3.            POLMAST
004400     05  BENEFICIARY             OCCURS 2 TIMES.                  POLMAST
004500         10  BEN-NAME            PIC X(30).                       POLMAST
004600         10  BEN-RELATION        PIC X(02).                       POLMAST
004700         10  BEN-SHARE           PIC 9(3)V99.                     POLMAST
004800     05  FILLER                  PIC X(12).                       POLMAST
004900     05  RIDER-COUNT             PIC S9(4)     COMP.              POLMAST
005000     05  RIDERS                  OCCURS 0 TO 5 TIMES              POLMAST
005100                                 DEPENDING ON RIDER-COUNT.        POLMAST
005200         10  RIDER-CODE          PIC X(04).                       POLMAST
005300         10  RIDER-FACE          PIC S9(7)V99  COMP-3.            POLMAST
005400         10  RIDER-PREMIUM       PIC S9(5)V99  COMP-3.            POLMAST

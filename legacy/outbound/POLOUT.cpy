000100*================================================================ POLOUT
000200* POLOUT    INBOUND POLICY REFRESH FOR THE POLICY ADMIN SYSTEM    POLOUT
000300*           WRITTEN BY DATA MASH FOR POLICIES THE MAINFRAME KEEPS POLOUT
000400*           SERVICING. RECFM=FB, LRECL=160, EBCDIC (CP037).       POLOUT
000500*           DATES YYYYMMDD, ZERO WHEN NONE. ONE RECORD PER POLICY.POLOUT
000600*================================================================ POLOUT
000700 01  POLOUT-REC.                                                  POLOUT
000800     05  OUT-POLICY-ID           PIC X(20).                       POLOUT
000900     05  OUT-SOURCE-SYSTEM       PIC X(16).                       POLOUT
001000     05  OUT-STATUS              PIC X(02).                       POLOUT
001100     05  OUT-LINE                PIC X(02).                       POLOUT
001200     05  OUT-PRODUCT-CODE        PIC X(12).                       POLOUT
001300     05  OUT-CARRIER-CODE        PIC X(04).                       POLOUT
001400     05  OUT-EFF-DATE            PIC 9(08).                       POLOUT
001500     05  OUT-EXP-DATE            PIC 9(08).                       POLOUT
001600     05  OUT-STATE               PIC X(02).                       POLOUT
001700     05  OUT-AGENT-CODE          PIC X(10).                       POLOUT
001800     05  OUT-ANNUAL-PREMIUM      PIC S9(11)V99 COMP-3.            POLOUT
001900     05  OUT-FACE-AMOUNT         PIC S9(13)V99 COMP-3.            POLOUT
002000     05  OUT-COVERAGE-COUNT      PIC 9(03).                       POLOUT
002100     05  OUT-TOTAL-LIMIT         PIC S9(13)V99 COMP-3.            POLOUT
002200     05  OUT-WAVE-ID             PIC X(16).                       POLOUT
002300     05  FILLER                  PIC X(34).                       POLOUT
